"""Great Expectations validation of datasets (global) and of each client's share (client).

One ephemeral GX context is built on first use (GX import takes several seconds) and its
validation definitions are cached per (dataset config, scope, split), so validating
hundreds of clients only costs one GX run per client on a small summary frame.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fedops.lazy import pd  # pandas on first use: configs load without it

from fedops.io import write_json_atomic
from fedops.data.base import DataError, Dataset, RawData, Scope, Split

_MAX_DETAIL_VALUES = 10


@dataclass
class ValidationReport:
    scope: str  # "global" | "client"
    name: str  # e.g. "fashion_mnist/train", "fashion_mnist/client-007"
    success: bool
    results: list[dict] = field(default_factory=list)
    error: str | None = None  # data unreadable / unusable: no expectations were run
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed_expectations(report: ValidationReport) -> list[str]:
    """``["expect_...[column]", ...]`` for the failed expectations (plus ``error: ...``)."""
    out = [f"error: {report.error}"] if report.error else []
    for r in report.results:
        if not r["success"]:
            out.append(f"{r['expectation']}[{r['column']}]" if r["column"] else r["expectation"])
    return out


# --------------------------------------------------------------------------------------
# GX plumbing
# --------------------------------------------------------------------------------------

# Expectations whose outcome is the same for every client when all client frames are row
# slices of one summary frame (same columns).
_SHARED_TYPES = {
    "expect_table_columns_to_match_ordered_list",
    "expect_table_columns_to_match_set",
    "expect_column_to_exist",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
}
_ROW_COUNT_TYPES = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}


class _GX:
    """Lazily created ephemeral context, one batch definition, cached suites."""

    def __init__(self) -> None:
        import great_expectations as gx

        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        ds = self.ctx.data_sources.add_pandas("fedops")
        asset = ds.add_dataframe_asset("frame")
        self.batch_def = asset.add_batch_definition_whole_dataframe("whole")
        self.defs: dict[str, Any] = {}
        self.row_counts: dict[str, list[dict[str, Any]]] = {}

    @staticmethod
    def _key(dataset: Dataset, scope: str, split: str) -> str:
        return json.dumps(
            [type(dataset).__module__, type(dataset).__qualname__,
             dataset.model_dump(mode="json"), scope, split],
            sort_keys=True,
        )

    def _definition(self, key: str, exps: list) -> Any:
        tag = hashlib.sha1(key.encode()).hexdigest()[:16]
        suite = self.ctx.suites.add(self.gx.ExpectationSuite(name=f"suite-{tag}"))
        for exp in exps:
            suite.add_expectation(exp)
        return self.ctx.validation_definitions.add(
            self.gx.ValidationDefinition(name=f"vd-{tag}", data=self.batch_def, suite=suite)
        )

    def definition(self, dataset: Dataset, scope: Scope, split: Split) -> Any:
        """Validation definition running all of the dataset's expectations."""
        key = self._key(dataset, scope, split)
        if key not in self.defs:
            self.defs[key] = self._definition(key, dataset.expectations(scope=scope, split=split))
        return self.defs[key]

    def client_definitions(self, dataset: Dataset) -> tuple[Any, Any | None, list[dict[str, Any]]]:
        """Client-scope expectations split into: a batched definition (row-wise + shared
        expectations, run once over all clients' rows stacked); a residual definition run
        per client (or None); and row-count expectations as dicts, checked per client."""
        from great_expectations.expectations.expectation import ColumnMapExpectation

        key = self._key(dataset, "client", "train")
        if key + "/batched" not in self.defs:
            batched, residual, counts = [], [], []
            for exp in dataset.expectations(scope="client", split="train"):
                etype = exp.expectation_type
                if etype in _ROW_COUNT_TYPES:
                    counts.append({"expectation": etype, **exp.configuration.kwargs})
                elif isinstance(exp, ColumnMapExpectation) or etype in _SHARED_TYPES:
                    batched.append(exp)
                else:
                    residual.append(exp)
            self.defs[key + "/residual"] = (
                self._definition(key + "/residual", residual) if residual else None
            )
            self.row_counts[key] = counts
            self.defs[key + "/batched"] = self._definition(key + "/batched", batched)
        return self.defs[key + "/batched"], self.defs[key + "/residual"], self.row_counts[key]


_lock = threading.RLock()
_state: dict[str, _GX] = {}


def _gx() -> _GX:
    with _lock:
        if "gx" not in _state:
            _state["gx"] = _GX()
        return _state["gx"]


def _exception_message(exc: Any) -> str | None:
    """GX reports exceptions as {raised_exception, exception_message, ...} or as a
    mapping of metric id -> such a dict."""
    if not isinstance(exc, dict) or not exc:
        return None
    if "raised_exception" in exc:
        return str(exc.get("exception_message")) if exc.get("raised_exception") else None
    msgs = [str(v.get("exception_message")) for v in exc.values()
            if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(msgs) or None


def _details(result: dict[str, Any], exc: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k in ("observed_value", "element_count", "missing_count", "unexpected_percent"):
        if k in result:
            d[k] = result[k]
    if "partial_unexpected_list" in result:
        d["unexpected_examples"] = list(result["partial_unexpected_list"])[:_MAX_DETAIL_VALUES]
    msg = _exception_message(exc)
    if msg:
        d["exception"] = msg[:500]
    return d


def _gx_results(vd: Any, frame: pd.DataFrame, result_format: Any = "SUMMARY") -> tuple[bool, list[dict]]:
    with _lock:
        res = vd.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    return bool(res.success), res.to_json_dict()["results"]


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    cfg = r["expectation_config"]
    result = r.get("result") or {}
    return {
        "expectation": cfg["type"],
        "column": cfg.get("kwargs", {}).get("column"),
        "success": bool(r["success"]),
        "unexpected_count": result.get("unexpected_count"),
        "details": _details(result, r.get("exception_info")),
    }


def _sorted(results: list[dict]) -> list[dict]:
    return sorted(results, key=lambda r: (r["expectation"], str(r["column"])))


def _run(vd: Any, frame: pd.DataFrame, *, scope: str, name: str) -> ValidationReport:
    success, raw_results = _gx_results(vd, frame)
    return ValidationReport(
        scope=scope, name=name, success=success,
        results=_sorted([_entry(r) for r in raw_results]), rows=len(frame),
    )


def _error(scope: str, name: str, exc: BaseException) -> ValidationReport:
    return ValidationReport(scope=scope, name=name, success=False, results=[], error=str(exc))


def _row_count_entry(spec: dict[str, Any], n: int) -> dict[str, Any]:
    if spec["expectation"] == "expect_table_row_count_to_equal":
        ok = n == spec["value"]
    else:
        lo, hi = spec.get("min_value"), spec.get("max_value")
        ok = (lo is None or n >= lo) and (hi is None or n <= hi)
    return {
        "expectation": spec["expectation"], "column": None, "success": bool(ok),
        "unexpected_count": None, "details": {"observed_value": n},
    }


def _split_batched(r: dict[str, Any], bounds: np.ndarray, sizes: np.ndarray) -> list[dict]:
    """Per-client entries from one result over the stacked frame."""
    base = _entry(r)
    result = r.get("result") or {}
    if "unexpected_index_list" not in result:  # shared (column list) or raised an exception
        return [dict(base, details=dict(base["details"])) for _ in sizes]
    idx = np.asarray(result["unexpected_index_list"], dtype=np.int64)
    values = list(result.get("unexpected_list") or [])
    if len(values) != len(idx):  # GX lists no values for null checks (or fewer than the indices)
        values = [None] * len(idx)
    owner = np.searchsorted(bounds, idx, side="right") - 1
    counts = np.bincount(owner, minlength=len(sizes)) if len(idx) else np.zeros(len(sizes), int)
    mostly = r["expectation_config"].get("kwargs", {}).get("mostly")
    out = []
    for c, n in enumerate(sizes):
        k = int(counts[c])
        ok = k == 0 if mostly is None else (n == 0 or 1 - k / n >= mostly)
        examples = [values[j] for j in np.flatnonzero(owner == c)[:_MAX_DETAIL_VALUES]] if k else []
        out.append(dict(base, success=bool(ok), unexpected_count=k,
                        details={"element_count": int(n), "unexpected_examples": examples}))
    return out


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def validate_dataset(dataset: Dataset, raw: RawData) -> list[ValidationReport]:
    """Global validation of the train and test splits (one report each)."""
    g = _gx()
    reports = []
    for split in ("train", "test"):
        name = f"{dataset.name}/{split}"
        try:
            x, y = raw.xy(split)
            frame = dataset.summary_frame(x, y)
        except (DataError, ValueError, TypeError) as exc:
            reports.append(_error("global", name, exc))
            continue
        reports.append(_run(g.definition(dataset, "global", split), frame, scope="global", name=name))
    return reports


def validate_clients(
    dataset: Dataset, raw: RawData, indices: Sequence[np.ndarray]
) -> list[ValidationReport]:
    """One client-scope report per client, on its train rows (``indices[i]`` positional).

    Cheap for many clients: the summary frame is computed once; row-wise expectations run
    in one GX validation over all clients' rows stacked (``result_format=COMPLETE``) and
    failures are attributed to clients by row position; column-list expectations are
    shared (every client frame is a row slice of the same frame); row counts are checked
    per client; any other (aggregate) expectation runs per client.
    """
    g = _gx()
    batched_vd, residual_vd, row_counts = g.client_definitions(dataset)
    width = max(3, len(str(len(indices) - 1)))
    names = [f"{dataset.name}/client-{i:0{width}d}" for i in range(len(indices))]
    try:
        x, y = raw.xy("train")
        summary = dataset.summary_frame(x, y)  # per-row, so a client's rows are a slice
    except (DataError, ValueError, TypeError) as exc:
        return [_error("client", n, exc) for n in names]
    idx_list = [np.asarray(i, dtype=np.int64).reshape(-1) for i in indices]
    bad = {c for c, i in enumerate(idx_list) if len(i) and (i.min() < 0 or i.max() >= len(summary))}
    sizes = np.array([0 if c in bad else len(i) for c, i in enumerate(idx_list)], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    good = [i for c, i in enumerate(idx_list) if c not in bad]
    rows = np.concatenate(good) if good else np.array([], dtype=np.int64)
    stacked = summary.iloc[rows].reset_index(drop=True)

    per_client: list[list[dict]] = [[] for _ in names]
    _, raw_results = _gx_results(batched_vd, stacked, result_format={"result_format": "COMPLETE"})
    for r in raw_results:
        for c, entry in enumerate(_split_batched(r, bounds, sizes)):
            per_client[c].append(entry)
    for c in range(len(names)):
        per_client[c].extend(_row_count_entry(spec, int(sizes[c])) for spec in row_counts)
        if residual_vd is not None and c not in bad:
            part = summary.iloc[idx_list[c]].reset_index(drop=True)
            per_client[c].extend(_entry(r) for r in _gx_results(residual_vd, part)[1])

    reports = []
    for c, name in enumerate(names):
        if c in bad:
            reports.append(_error("client", name, DataError(
                f"client indices out of range 0..{len(summary) - 1}")))
            continue
        results = _sorted(per_client[c])
        reports.append(ValidationReport(
            scope="client", name=name, success=all(r["success"] for r in results),
            results=results, rows=int(sizes[c]),
        ))
    return reports


def validate_raw_dir(dataset: Dataset, raw_dir: Path) -> tuple[list[ValidationReport], RawData | None]:
    """Load (hash-checked) and validate globally; unreadable data gives error reports."""
    try:
        raw = dataset.load_raw(raw_dir)
    except DataError as exc:
        return [_error("global", f"{dataset.name}/{s}", exc) for s in ("train", "test")], None
    return validate_dataset(dataset, raw), raw


def write_report(reports: ValidationReport | Sequence[ValidationReport], path: Path) -> Path:
    """Write ``{"success": all ok, "reports": [...]}`` as JSON, atomically."""
    if isinstance(reports, ValidationReport):
        reports = [reports]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "success": all(r.success for r in reports),
        "failed": {r.name: failed_expectations(r) for r in reports if not r.success},
        "reports": [r.to_dict() for r in reports],
    }
    write_json_atomic(payload, path)
    return path

