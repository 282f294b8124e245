"""Incentives: a task's reward budget split into points per client (:mod:`fedops.incentives.points`)
and the simulated devices whose time a round spends (:mod:`fedops.incentives.devices`)."""

from fedops.incentives.devices import DeviceProfile, client_time, draw_profiles
from fedops.incentives.points import SCHEMES, split_points

__all__ = ["SCHEMES", "DeviceProfile", "client_time", "draw_profiles", "split_points"]
