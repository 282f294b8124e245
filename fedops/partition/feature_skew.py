"""Feature skew: IID indices, with a per-client input transform of growing strength."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from fedops.lazy import torch, F  # torch on first use: configs load without it
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner, iid_assignment

TRANSFORM_KEYS = ("rotation_deg", "noise_std")


@PARTITIONERS.register("feature_skew")
class FeatureSkewPartitioner(Partitioner):
    """IID indices plus a per-client feature transform in ``client_meta``.

    Client ``i`` of ``K`` gets strength ``max * i / (K - 1)`` (0 for a single client):
    ``{"noise_std": ...}`` for ``kind="noise"`` -- the "noise-based feature imbalance" of Li et
    al., 2021, "Federated Learning on Non-IID Data Silos: An Experimental Study" (NIID-Bench, also
    in FedLab) -- or ``{"rotation_deg": ...}`` for ``kind="rotation"``.  The transform is applied
    to each batch by :func:`apply_feature_transform`.
    """

    name: Literal["feature_skew"] = "feature_skew"
    kind: Literal["noise", "rotation"] = "noise"
    max_noise_std: float = Field(0.1, ge=0, allow_inf_nan=False)
    max_rotation_deg: float = Field(90.0, ge=0, le=360)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        ramp = [i / (num_clients - 1) if num_clients > 1 else 0.0 for i in range(num_clients)]
        if self.kind == "noise":
            meta = tuple({"noise_std": self.max_noise_std * r} for r in ramp)
        else:
            meta = tuple({"rotation_deg": self.max_rotation_deg * r} for r in ramp)
        assignment = iid_assignment(labels.size, num_clients, rng)
        return Partition.from_assignment(assignment, num_clients, meta)


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a ``[B, C, H, W]`` batch counter-clockwise (as displayed, i.e. the direction of
    ``torch.rot90(x, 1, dims=(-2, -1))``) by ``degrees`` about the image centre; bilinear
    sampling, zero padding outside the image."""
    if x.ndim != 4:
        raise ValueError(f"rotation needs a [B, C, H, W] image batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    # affine_grid maps output to input in normalised coords; the aspect factors keep the rotation
    # rigid in pixel space for non-square images.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(b, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_feature_transform(
    x: torch.Tensor, meta: dict, *, generator: torch.Generator
) -> torch.Tensor:
    """Apply a client's feature transform (from ``Partition.client_meta``) to a batch.

    ``rotation_deg``: rotate a 4-D image batch (see :func:`rotate_images`; ``ValueError`` on other
    shapes).  ``noise_std``: add ``noise_std * N(0, 1)`` noise drawn from ``generator`` (Li et al.,
    2021).  Keys other than these (e.g. ``natural_id``'s ``"group"``) are descriptive and ignored;
    with no transform to apply (``{}`` or zero strength) ``x`` itself is returned.  Pure: ``x`` is
    never modified in place.
    """
    out = x
    transforms = {k: meta[k] for k in TRANSFORM_KEYS if k in meta}
    if transforms and not torch.is_floating_point(x):
        raise ValueError(f"feature transforms need a floating-point batch, got {x.dtype}")
    degrees = float(transforms.get("rotation_deg", 0.0))
    if degrees % 360.0 != 0.0 or (x.ndim != 4 and "rotation_deg" in transforms):
        out = rotate_images(out, degrees)
    std = float(transforms.get("noise_std", 0.0))
    if std < 0 or not math.isfinite(std):
        raise ValueError(f"noise_std must be a finite value >= 0, got {std}")
    if std > 0:
        noise = torch.randn(out.shape, generator=generator, device=generator.device, dtype=out.dtype)
        out = out + std * noise.to(out.device)
    return out
