"""The client's side of a round after local training: what it does to its update before upload.

A client's upload is an ordered list of small steps, built once from the config:

* no secure aggregation: ``[dp_clip (central DP only), encode]``;
* secure aggregation: ``[project, dp_clip to C - h (central DP only), fixed_point]``; the masking
  that follows is a protocol between all the round's clients and the server
  (:mod:`fedops.round.transport`), not a step of one client.

Each step takes and returns an :class:`Outgoing` (the vector so far, and what the client reports
about it). ``dp_clip`` is client-level DP's clipping on the device, with the one clipping
implementation :func:`fedops.privacy.clipping.clip_by_norm`; it also records the bit
``1[||u|| <= C]`` that adaptive clipping counts. ``encode`` is the codec (its per-client state,
e.g. error feedback's residual, comes in and goes out with the upload: the run's state keeps it
between rounds). ``fixed_point`` quantises into Z_M for secure aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from fedops.compress.base import CodecContext
from fedops.config import Config
from fedops.privacy.clipping import clip_by_norm
from fedops.types import ClientUpdate, EncodedUpdate


@dataclass
class Outgoing:
    """One client's upload in the making (mutable while the steps run)."""

    client_id: int
    vector: torch.Tensor
    """The update so far: float32 ``[d]`` (under secure aggregation the codec's projection, float64)."""
    num_samples: int
    ctx: CodecContext
    clip_norm: float | None
    """The round's DP clip norm ``C``, sent by the server with the model (central DP only)."""
    codec_state: Any = None
    payload: Any = None
    nbytes: int = 0
    clip_indicator: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    """What the client tells the server about its update (the release policy decides what of it
    leaves the round)."""
    weight: float | None = None
    """The client's aggregation weight when the rule sets one (FairFed), else None (its sample count)."""
    weight_scale: float | None = None
    """The largest weight any client can have (FairFed: the total, ``n``), for fixed point."""

    def message(self) -> EncodedUpdate:
        if self.payload is None:
            raise ValueError(f"client {self.client_id}: the uplink produced no payload")
        return EncodedUpdate(client_id=self.client_id, payload=self.payload, nbytes=self.nbytes,
                             num_samples=self.num_samples, clip_indicator=self.clip_indicator, weight=self.weight)


class UplinkStep(Protocol):
    name: str

    def __call__(self, out: Outgoing) -> Outgoing: ...


@dataclass(frozen=True)
class DPClip:
    """Client-level DP: clip the vector to L2 norm ``C - headroom`` and record ``1[||v|| <= C]``.

    ``secagg_scale`` set: the headroom is ``0.5 sqrt(d) / scale`` (:func:`fedops.secagg.encode.dp_clip_bound`),
    what rounding to the fixed-point grid can add, so the quantised vector has norm ``<= C``."""

    secagg_scale: float | None = None
    name: str = "dp_clip"

    def __call__(self, out: Outgoing) -> Outgoing:
        c = out.clip_norm
        if c is None:
            raise ValueError("client-level DP: the server must send the round's clip norm with the model")
        bound = c
        if self.secagg_scale is not None:
            from fedops.secagg.encode import dp_clip_bound

            bound = dp_clip_bound(clip_norm=c, dim=out.vector.numel(), scale=self.secagg_scale)
        if not bool(torch.isfinite(out.vector).all()):  # nothing to clip: the server's validation rejects it
            out.clip_indicator = 0
            out.report["dp_clipped"] = 1.0
            return out
        clipped, norms = clip_by_norm(out.vector.reshape(1, -1), max_norm=bound)
        within = float(norms[0].double()) <= c
        out.vector = clipped[0]
        out.clip_indicator = int(within)
        out.report["dp_clipped"] = float(not within)
        return out


@dataclass(frozen=True)
class Encode:
    """The codec's payload (bytes on the wire), plus one byte for the DP clip bit when sent."""

    codec: Any
    name: str = "encode"

    def __call__(self, out: Outgoing) -> Outgoing:
        payload, out.codec_state = self.codec.encode(out.vector, ctx=out.ctx, state=out.codec_state)
        out.payload = payload
        out.nbytes = len(payload) + (out.clip_indicator is not None)
        return out


@dataclass(frozen=True)
class Project:
    """The codec's linear projection, shared by every client of the round (secure aggregation
    sums projected vectors; the server lifts the sum back)."""

    codec: Any
    name: str = "project"

    def __call__(self, out: Outgoing) -> Outgoing:
        out.vector = self.codec.project(out.vector, ctx=out.ctx).to(torch.float64)  # fixed point works in float64
        return out


@dataclass(frozen=True)
class FixedPoint:
    """Quantise into Z_M for secure aggregation: weighted FedAvg ``[w u, w clip]`` with
    ``w = n_i / n_max``, or under DP ``[u', clip * 1[||u|| <= C]]`` (the bit only with adaptive
    clipping). See :mod:`fedops.secagg.encode`."""

    clip: float
    scale: float
    bits: int
    max_samples: int
    dp: bool
    send_count: bool
    name: str = "fixed_point"

    def __call__(self, out: Outgoing) -> Outgoing:
        from fedops.secagg.encode import encode_dp, encode_weighted

        x = out.vector.to(torch.float64).numpy()
        common = {"clip": self.clip, "scale": self.scale, "bits": self.bits}
        if self.dp:
            q = encode_dp(x, count=self.send_count and bool(out.clip_indicator), **common)
        else:
            w = (out.num_samples / self.max_samples if out.weight is None
                 else out.weight / out.weight_scale)  # FairFed: the client's own weight, over the total
            q, info = encode_weighted(x, weight=w, **common)
            out.report.update(info)
        out.payload = np.asarray(q)
        out.nbytes = q.size * self.bits // 8
        return out


@dataclass(frozen=True)
class Uplink:
    """The configured steps, in order. :meth:`send` runs them on one client's update."""

    steps: tuple[UplinkStep, ...]

    @classmethod
    def from_config(cls, config: Config, *, max_samples: int) -> "Uplink":
        codec = config.transport.codec
        central = config.privacy.mode == "central"
        sa = config.secagg
        if sa.enabled:
            steps: list[UplinkStep] = [Project(codec)]
            if central:
                steps.append(DPClip(secagg_scale=sa.scale))
            steps.append(FixedPoint(clip=sa.clip, scale=sa.scale, bits=sa.bits, max_samples=max_samples, dp=central,
                                    send_count=central and config.privacy.adaptive_clipping))
        else:
            steps = ([DPClip()] if central else []) + [Encode(codec)]
        return cls(tuple(steps))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def send(self, update: ClientUpdate, *, ctx: CodecContext, clip_norm: float | None,
             codec_state: Any = None, weight: float | None = None, weight_scale: float | None = None) -> Outgoing:
        out = Outgoing(client_id=update.client_id, vector=update.delta.detach().to("cpu", torch.float32),
                       num_samples=update.num_samples, ctx=ctx, clip_norm=clip_norm, codec_state=codec_state,
                       weight=weight, weight_scale=weight_scale)
        for step in self.steps:
            out = step(out)
        return out
