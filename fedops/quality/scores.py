"""Per-client signals computed from one round's stacked updates ``[k, d]``.

* :func:`norm_outliers`: which updates have an L2 norm above ``multiple`` times the round's
  median norm (the median is robust to a minority of huge updates, so a scaled-up attack cannot
  drag the threshold up with it).
* :func:`anomaly_scores`: the robust z-score of the log norm over the round (:func:`robust_z`), the cosine
  between each update and the round's aggregate and its robust z-score over the round, and the
  Krum score (sum of squared distances to the ``k - f - 2`` nearest other updates, Blanchard et
  al. 2017). A client is flagged when its norm is an outlier above its peers (norm z-score over
  ``flag_norm_z``) or its direction an outlier below them (cosine z-score under
  ``-flag_cosine_z``): both relative to the round, since on non-IID data honest clients' cosines
  to the aggregate spread widely and many fall below 0. With fewer than ``min_clients`` updates
  the spread cannot be estimated and nothing is flagged. 3.5 is Iglewicz and Hoaglin's cut-off
  for modified z-scores.

Results are float64, per row, so they follow the clients' order. Float32 updates at least a block
wide (:func:`fedops.aggregate.robust.work_dtype`) are multiplied in float32 over blocks of
columns, the blocks' sums added up in float64 (relative error ~1e-5, far below the spreads the
z-scores measure); narrower stacks and other dtypes in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.aggregate.robust import krum_scores, work_dtype


def _validate(updates: torch.Tensor) -> torch.Tensor:
    if not isinstance(updates, torch.Tensor) or updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [k, d] stack, got {getattr(updates, 'shape', type(updates))}")
    return updates


def _check(updates: torch.Tensor) -> torch.Tensor:
    return _validate(updates).to(torch.float64)


def norm_outliers(updates: torch.Tensor, *, multiple: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(outlier mask [k], norms [k], median norm)``: ``||u_i|| > multiple * median``.

    The median of an even count is the mean of the two middle norms."""
    if not multiple > 1:
        raise ValueError(f"multiple must be > 1, got {multiple!r}")
    u = _check(updates)
    norms = torch.linalg.vector_norm(u, dim=1)
    median = float(torch.quantile(norms, 0.5))
    return norms > multiple * median, norms, median


def robust_z(values: torch.Tensor, *, floor: float = 0.0) -> torch.Tensor:
    """Modified z-scores (Iglewicz and Hoaglin 1993): ``(x - median) / (1.4826 MAD)``.

    The median and the median absolute deviation (MAD) are not dragged along by a minority of
    outliers, unlike the mean and standard deviation: with 2 of 6 updates scaled up tenfold, a
    plain z-score stays near 1.5, a robust one near 50. When more than half the
    values are equal (MAD = 0) the scale falls back to ``1.2533 x`` the mean absolute deviation
    from the median; when every value is equal, all scores are 0. The median of an even count
    is the mean of the two middle values. ``floor`` bounds the scale from below: a spread that
    small is not a spread worth flagging against."""
    x = values.to(torch.float64)
    med = torch.quantile(x, 0.5)
    dev = (x - med).abs()
    scale = 1.4826 * torch.quantile(dev, 0.5)
    if float(scale) == 0.0:
        scale = 1.2533 * dev.mean()
    scale = torch.clamp(scale, min=floor)
    if float(scale) == 0.0:
        return torch.zeros_like(x)
    return (x - med) / scale


def default_byzantine(k: int) -> int:
    """The largest ``f`` with ``k > 2f + 2`` (Krum's condition), at least 0."""
    return max(0, (k - 3) // 2)


LOG_NORM_FLOOR = 0.1
"""The smallest spread of log norms scored against: z = 3.5 then needs a norm e^0.35 = 1.42x the median."""
COSINE_FLOOR = 0.1
"""The smallest spread of cosines scored against: z = -3.5 then needs a cosine 0.35 below the median."""


@dataclass(frozen=True)
class AnomalyScores:
    norm: torch.Tensor
    norm_z: torch.Tensor
    cosine: torch.Tensor
    cosine_z: torch.Tensor
    krum: torch.Tensor | None  # None when k - f - 2 < 1
    flagged: torch.Tensor

    def row(self, i: int) -> dict[str, float | bool | None]:
        return {
            "norm_z": float(self.norm_z[i]),
            "cosine_to_aggregate": float(self.cosine[i]),
            "cosine_z": float(self.cosine_z[i]),
            "krum_score": None if self.krum is None else float(self.krum[i]),
            "flagged": bool(self.flagged[i]),
        }


def anomaly_scores(
    updates: torch.Tensor, aggregate: torch.Tensor, *, num_byzantine: int | None = None,
    flag_norm_z: float = 3.5, flag_cosine_z: float = 3.5, min_clients: int = 10,
) -> AnomalyScores:
    from fedops.aggregate.fedavg import BLOCK, in_parts

    u = _validate(updates)  # over blocks of columns: no float64 copy of the whole stack
    work = work_dtype(u)
    a = aggregate.to(torch.float64).reshape(-1)
    if a.numel() != u.shape[1]:
        raise ValueError(f"aggregate has {a.numel()} values, updates have {u.shape[1]}")
    a_work = a.to(work)
    k = u.shape[0]

    def part(starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        sq = torch.zeros(k, dtype=torch.float64, device=u.device)
        dots = torch.zeros(k, dtype=torch.float64, device=u.device)
        for lo in starts:
            block = u[:, lo:lo + BLOCK].to(work)
            sq += (block * block).sum(dim=1).to(torch.float64)
            dots += (block @ a_work[lo:lo + BLOCK]).to(torch.float64)
        return sq, dots

    sq = torch.zeros(k, dtype=torch.float64, device=u.device)
    dots = torch.zeros(k, dtype=torch.float64, device=u.device)
    for part_sq, part_dots in in_parts(u.shape[1], part, device=u.device):  # added in part order
        sq += part_sq
        dots += part_dots
    norms = sq.sqrt()
    # on the log scale: norms spread multiplicatively (a client with one class, or few samples,
    # moves further), so a 3.5 cut-off on log norms means "this many times larger than its peers"
    norm_z = robust_z(norms.clamp_min(1e-12).log(), floor=LOG_NORM_FLOOR)
    a_norm = torch.linalg.vector_norm(a)
    denom = norms * a_norm
    cosine = torch.where(denom > 0, dots / denom.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(norms))
    f = default_byzantine(k) if num_byzantine is None else int(num_byzantine)
    krum = krum_scores(u, f) if k - f - 2 >= 1 else None
    cosine_z = robust_z(cosine, floor=COSINE_FLOOR)
    if k < min_clients:
        flagged = torch.zeros(k, dtype=torch.bool)
    else:
        flagged = (norm_z > flag_norm_z) | (cosine_z < -flag_cosine_z)
    return AnomalyScores(norms, norm_z, cosine, cosine_z, krum, flagged)
