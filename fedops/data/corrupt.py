"""Simulated bad data on chosen clients (the crowdsourcing view of FL: some data owners hold
poor data). Pure: a new :class:`RawData`, randomness from an explicit seed.

``with_missing_values`` blanks a fraction of the feature cells in the given clients' training rows
(``NaN``: a missing measurement), as in CrowdFL's Pima experiment, where one of three data owners
has missing values. The global validation runs on the data set before this (the server never sees
client data); each client's own validation (Great Expectations, client scope) sees its rows with
the gaps, and the training pipeline treats a gap as the data set's missing-value code.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedops.data.base import DataError, RawData
from fedops.rng import STREAM_BAD_DATA, numpy_rng


def with_missing_values(raw: RawData, *, rows: dict[int, np.ndarray], rate: float, seed: int) -> RawData:
    """A copy of ``raw`` where each client in ``rows`` (client id -> training-row positions) has
    ``round(rate x cells)`` of its feature cells set to NaN, chosen uniformly without replacement
    (stream ``(seed, STREAM_BAD_DATA, client)``). Labels are left alone."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    if raw.kind != "tabular" or raw.frame_train is None:
        raise DataError(f"{raw.name}: missing values can only be simulated on tabular data")
    frame = raw.frame_train.copy()
    features = [c for c in frame.columns if c != raw.label_column]
    values = frame[features].to_numpy(dtype=np.float64, copy=True)
    for client, positions in sorted(rows.items()):
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= len(frame)):
            raise ValueError(f"client {client}: row positions out of range 0..{len(frame) - 1}")
        cells = pos.size * len(features)
        pick = numpy_rng(seed, STREAM_BAD_DATA, client).choice(cells, size=int(round(rate * cells)), replace=False)
        values[pos[pick // len(features)], pick % len(features)] = np.nan
    frame[features] = values
    return replace(raw, frame_train=frame)
