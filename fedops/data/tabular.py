"""Your own table: a CSV or Parquet file with a declared label column and schema.

    data:
      name: tabular
      path: data/patients.csv        # .csv, .parquet or .pq
      label: outcome                 # the label column (any values; classes are their strings)
      features: [age, bmi, glucose]  # the numeric feature columns, in file order
      classes: ["no", "yes"]         # the label values (compared as strings)
      ranges: {age: [0, 120]}        # optional plausible range per feature
      test_fraction: 0.2             # stratified split, seeded by split_seed

The file is copied into ``data/raw/tabular/`` (keeping its permissions) and hashed like the
built-in data sets. Great Expectations checks the declared schema globally and for every client:
exactly the declared columns, no missing feature or label, each feature within its range, labels
within ``classes``; globally also every class present. Features are standardised with the
training split's statistics.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

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
from fedops.data.pima import stratified_split
from fedops.lazy import pd  # pandas on first use: configs load without it

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@DATASETS.register("tabular")
class Tabular(Dataset):
    name: str = "tabular"
    path: str
    label: str = Field(min_length=1)
    features: list[str] = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0

    install_hint: ClassVar[str] = "set data.path to a .csv or .parquet file"
    tabular: ClassVar[bool] = True

    @field_validator("path")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if Path(value).suffix.lower() not in SUFFIXES:
            raise ValueError(f"data.path {value!r} must end in one of {', '.join(SUFFIXES)}")
        return value

    @model_validator(mode="after")
    def _schema(self) -> "Tabular":
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be distinct column names, got {self.features}")
        if self.label in self.features:
            raise ValueError(f"the label column {self.label!r} cannot also be a feature")
        for col, (lo, hi) in self.ranges.items():
            if not lo <= hi:
                raise ValueError(f"ranges.{col}: [{lo}, {hi}] is empty")
            if col not in self.features:
                raise ValueError(f"ranges names {col!r}, which is not a feature ({', '.join(self.features)})")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {self.classes}")
        return self

    @property
    def file_name(self) -> str:
        return "table" + Path(self.path).suffix.lower()

    # ---- sources / parsing ------------------------------------------------------

    def sources(self, *, project_dir: Path) -> list[Source]:
        src = self.configured_path(project_dir)

        def copy(dest: Path) -> dict[str, str]:
            if not src.is_file():
                raise FileNotFoundError(f"{src} not found")
            shutil.copy2(src, dest / self.file_name)  # keeps the source's permissions
            return {self.file_name: str(src)}

        return [(f"config path {src}", copy)]

    def read_frame(self, path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_csv(path) if SUFFIXES[path.suffix] == "csv" else pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds
            raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        if self.label not in frame.columns:
            raise DataError(f"{path}: label column {self.label!r} missing (columns {list(frame.columns)})")
        frame = frame.reset_index(drop=True)
        frame[self.label] = frame[self.label].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
        return frame

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, (self.file_name,))
        path = raw_dir / self.file_name
        if not path.is_file():
            raise DataError(f"raw file {path} is missing")
        frame = self.read_frame(path)
        keep = [*self.features, self.label]
        train_idx, test_idx = stratified_split(frame[self.label].fillna(""), self.test_fraction, self.split_seed)
        # columns outside the declared schema are kept, so the expectation on the column list reports them
        extra = [c for c in frame.columns if c not in keep]
        return RawData(
            name=self.name,
            frame_train=frame.iloc[train_idx][keep + extra].reset_index(drop=True),
            frame_test=frame.iloc[test_idx][keep + extra].reset_index(drop=True),
            label_column=self.label,
            class_names=tuple(self.classes),
        )

    # ---- validation ------------------------------------------------------------------

    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        return table_frame(x, y, label=self.label)

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        import great_expectations as gx

        E = gx.expectations
        exps: list = [E.ExpectTableColumnsToMatchOrderedList(column_list=[*self.features, self.label])]
        for col in self.features:
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col))
            if col in self.ranges:
                lo, hi = self.ranges[col]
                exps.append(E.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi))
        exps.append(E.ExpectColumnValuesToNotBeNull(column=self.label))
        exps.append(E.ExpectColumnValuesToBeInSet(column=self.label, value_set=list(self.classes)))
        if scope == "global":
            exps.append(E.ExpectTableRowCountToBeBetween(min_value=2))
            exps.append(E.ExpectColumnDistinctValuesToContainSet(column=self.label, value_set=list(self.classes)))
        elif scope == "client":
            exps.append(E.ExpectTableRowCountToBeBetween(min_value=1))
        else:
            raise ValueError(f"scope must be 'global' or 'client', got {scope!r}")
        return exps

    # ---- training tensors --------------------------------------------------------------

    def to_bundle(self, raw: RawData) -> DataBundle:
        return table_bundle(raw, name=self.name, features=self.features, label=self.label, classes=self.classes)
