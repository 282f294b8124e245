"""Pima Indians Diabetes (768 rows, 8 features, label neg/pos) from R package mlbench."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fedops.lazy import pd  # pandas on first use: configs load without it
from pydantic import Field

from fedops.data.base import (
    DATASETS,
    DataBundle,
    DataError,
    Dataset,
    RawData,
    Scope,
    Source,
    Split,
    table_bundle,
    table_frame,
    verify_hashes,
)

RDA_NAME = "PimaIndiansDiabetes.rda"
OBJECT_NAME = "PimaIndiansDiabetes"
# Debian package r-cran-mlbench
SYSTEM_FILE = Path("/usr/lib/R/site-library/mlbench/data") / RDA_NAME
# where the bootstrap script extracts the .deb (relative to the project directory)
EXTRACTED_FILE = Path(".cache/system-data/usr/lib/R/site-library/mlbench/data") / RDA_NAME

FEATURES = ("pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age")
LABEL = "diabetes"
CLASS_NAMES = ("neg", "pos")
TOTAL_ROWS = 768

# plausible ranges; zeros are allowed (the raw data codes missing values as 0)
RANGES: dict[str, tuple[float, float]] = {
    "pregnant": (0, 20),
    "glucose": (0, 250),
    "pressure": (0, 150),
    "triceps": (0, 110),
    "insulin": (0, 1000),
    "mass": (0, 80),
    "pedigree": (0, 3),
    "age": (18, 100),
}


def stratified_split(labels: pd.Series, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, ``round(n_c * test_fraction)`` rows go to
    test (chosen by a seeded permutation).  Returns sorted positional (train, test) indices."""
    y = np.asarray(labels.astype(str))
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in sorted(set(y)):
        idx = np.flatnonzero(y == cls)
        k = int(round(len(idx) * test_fraction))
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.array([], dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def _copy_file(src: Path, dest: Path) -> dict[str, str]:
    src = Path(src)
    if src.is_dir():
        src = src / RDA_NAME
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found")
    shutil.copy2(src, dest / RDA_NAME)  # keeps the source's permissions
    return {RDA_NAME: str(src)}


@DATASETS.register("pima")
class Pima(Dataset):
    name: str = "pima"
    path: str | None = None
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0

    install_hint: ClassVar[str] = (
        "Install the Debian package: `apt-get install r-cran-mlbench` "
        f"(file {SYSTEM_FILE}), run the bootstrap script (extracts it into "
        f"<project>/{EXTRACTED_FILE}), or set data.path to {RDA_NAME}"
    )
    raw_files: ClassVar[tuple[str, ...]] = (RDA_NAME,)
    tabular: ClassVar[bool] = True

    # ---- sources / parsing ------------------------------------------------------

    def sources(self, *, project_dir: Path) -> list[Source]:
        out: list[Source] = []
        p = self.configured_path(project_dir)
        if p is not None:
            out.append((f"config path {p}", lambda d, p=p: _copy_file(p, d)))
        out.append((f"system package r-cran-mlbench ({SYSTEM_FILE})",
                    lambda d: _copy_file(SYSTEM_FILE, d)))
        extracted = Path(project_dir) / EXTRACTED_FILE
        out.append((f"extracted package copy ({extracted})",
                    lambda d: _copy_file(extracted, d)))
        return out

    def read_frame(self, path: Path) -> pd.DataFrame:
        """The full 768-row table from the .rda file; DataError naming the file if unreadable."""
        import rdata

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                objs = rdata.read_rda(str(path))
        except Exception as exc:  # noqa: BLE001 - rdata raises many kinds
            raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        if OBJECT_NAME not in objs:
            raise DataError(f"{path} has no object {OBJECT_NAME!r} (has {sorted(objs)})")
        frame = objs[OBJECT_NAME]
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{path}: {OBJECT_NAME} is not a data frame")
        if LABEL not in frame.columns:
            raise DataError(f"{path}: column {LABEL!r} missing (columns {list(frame.columns)})")
        frame = frame.reset_index(drop=True)
        frame[LABEL] = frame[LABEL].astype(object)
        return frame

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, self.raw_files)
        path = raw_dir / RDA_NAME
        if not path.is_file():
            raise DataError(f"raw file {path} is missing")
        frame = self.read_frame(path)
        train_idx, test_idx = stratified_split(frame[LABEL], self.test_fraction, self.split_seed)
        return RawData(
            name=self.name,
            frame_train=frame.iloc[train_idx].reset_index(drop=True),
            frame_test=frame.iloc[test_idx].reset_index(drop=True),
            label_column=LABEL,
            class_names=CLASS_NAMES,
        )

    # ---- validation ------------------------------------------------------------------

    def expected_rows(self, split: Split) -> int:
        n_test = sum(int(round(n * self.test_fraction)) for n in (500, 268))  # neg, pos
        return TOTAL_ROWS - n_test if split == "train" else n_test

    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        return table_frame(x, y, label=LABEL)

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        import great_expectations as gx

        E = gx.expectations
        exps: list = [E.ExpectTableColumnsToMatchOrderedList(column_list=[*FEATURES, LABEL])]
        for col in FEATURES:
            lo, hi = RANGES[col]
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col))
            exps.append(E.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi))
        exps.append(E.ExpectColumnValuesToNotBeNull(column=LABEL))
        exps.append(E.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(CLASS_NAMES)))
        if scope == "global":
            exps.append(E.ExpectTableRowCountToEqual(value=self.expected_rows(split)))
            exps.append(E.ExpectColumnDistinctValuesToContainSet(column=LABEL, value_set=list(CLASS_NAMES)))
        elif scope == "client":
            exps.append(E.ExpectTableRowCountToBeBetween(min_value=1))
        else:
            raise ValueError(f"scope must be 'global' or 'client', got {scope!r}")
        return exps

    # ---- training tensors --------------------------------------------------------------

    def to_bundle(self, raw: RawData) -> DataBundle:
        return table_bundle(raw, name=self.name, features=FEATURES, label=LABEL, classes=CLASS_NAMES)
