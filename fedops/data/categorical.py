"""Pure preprocessing for census-style tables: cleaning the raw strings, one-hot encoding of the
categorical columns and standardisation of the numeric ones, with every statistic (category
sets, means, standard deviations) fitted on the training split only.

Conventions of the UCI files: fields are separated by ``", "`` (leading blanks), a missing value is
``?``, and ``adult.test`` spells its labels with a trailing dot (``>50K.``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fedops.lazy import pd  # pandas on first use: configs load without it

MISSING_CODE = "?"


def clean_strings(frame: pd.DataFrame, *, numeric: Sequence[str], missing: str = MISSING_CODE) -> pd.DataFrame:
    """A copy with surrounding blanks stripped from every text cell, ``missing`` (and empty
    strings) as NaN, and the ``numeric`` columns as float64 (a cell that is not a number becomes
    NaN: the missing-rate expectations report it)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            s = out[col].astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            out[col] = s.map(lambda v: np.nan if isinstance(v, str) and v in (missing, "") else v).astype(object)
    for col in numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    return out


def normalise_labels(values: pd.Series) -> pd.Series:
    """Labels as stripped strings without a trailing dot (``' >50K.'`` -> ``'>50K'``); NaN stays."""
    return values.map(lambda v: v.strip().rstrip(".").strip() if isinstance(v, str) else v).astype(object)


@dataclass(frozen=True)
class TableEncoding:
    """What :func:`fit_encoding` learned from the training split."""

    numeric: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    mean: np.ndarray
    std: np.ndarray

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = list(self.numeric)
        for col, cats in self.categories.items():
            names += [f"{col}={c}" for c in cats]
        return tuple(names)

    @property
    def num_features(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories.values())


def fit_encoding(train: pd.DataFrame, *, numeric: Sequence[str], categorical: Sequence[str]) -> TableEncoding:
    """Category sets (sorted, missing excluded) and numeric means / standard deviations (missing
    cells skipped; a constant column gets std 1) of the training split."""
    missing = [c for c in (*numeric, *categorical) if c not in train.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table (columns {list(train.columns)})")
    x = train.loc[:, list(numeric)].to_numpy(dtype=np.float64)
    if x.size and np.isnan(x).all(axis=0).any():
        bad = [c for c, a in zip(numeric, np.isnan(x).all(axis=0)) if a]
        raise ValueError(f"numeric columns {bad} have no value in the training split")
    mean = np.nanmean(x, axis=0) if x.size else np.zeros(len(numeric))
    std = np.nanstd(x, axis=0) if x.size else np.ones(len(numeric))
    std = np.where(std > 0, std, 1.0)
    cats = {c: tuple(sorted(str(v) for v in train[c].dropna().unique())) for c in categorical}
    return TableEncoding(tuple(numeric), cats, mean, std)


def encode_table(frame: pd.DataFrame, enc: TableEncoding) -> np.ndarray:
    """float32 ``[N, F]``: standardised numeric columns (a missing cell becomes the training mean,
    i.e. 0) followed by one 0/1 column per training category (a missing or unseen category is all
    zeros)."""
    n = len(frame)
    x = frame.loc[:, list(enc.numeric)].to_numpy(dtype=np.float64)
    x = np.nan_to_num((x - enc.mean) / enc.std, nan=0.0)
    blocks = [x]
    for col, cats in enc.categories.items():
        codes = {c: i for i, c in enumerate(cats)}
        idx = frame[col].map(lambda v: codes.get(str(v), -1) if isinstance(v, str) else -1).to_numpy(dtype=np.int64)
        onehot = np.zeros((n, len(cats)), dtype=np.float64)
        ok = idx >= 0
        onehot[np.flatnonzero(ok), idx[ok]] = 1.0
        blocks.append(onehot)
    return np.concatenate(blocks, axis=1).astype(np.float32)


def group_codes(values: pd.Series, *, privileged: str | None, groups: Sequence[str]) -> np.ndarray:
    """int64 group index per row: with ``privileged``, 1 for that value and 0 for every other
    (binary groups ``(not privileged, privileged)``); without, the position in ``groups``. A
    missing or unknown value raises, naming it."""
    s = values.astype(object)
    if s.isna().any():
        raise ValueError(f"sensitive column {values.name!r} has {int(s.isna().sum())} missing values")
    if privileged is not None:
        return (s == privileged).to_numpy(dtype=np.int64)
    codes = {g: i for i, g in enumerate(groups)}
    unknown = sorted(set(s) - set(codes))
    if unknown:
        raise ValueError(f"sensitive column {values.name!r} has values {unknown[:5]} outside {list(groups)}")
    return s.map(codes).to_numpy(dtype=np.int64)
