from fedops.aggregate import fedavg, optimizers  # noqa: F401  (registration)
from fedops.aggregate import fairfed, qffl, robust  # noqa: F401  (registration)
from fedops.aggregate.base import AGGREGATORS, SERVER_OPTIMIZERS, Aggregator, ServerOptimizer
from fedops.aggregate.fedavg import weighted_mean

__all__ = ["AGGREGATORS", "SERVER_OPTIMIZERS", "Aggregator", "ServerOptimizer", "weighted_mean"]
