"""Great Expectations validation: planted corruptions are caught by the expected
expectation; clean real data passes; per-client validation isolates a bad client."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.data import (
    DATASETS,
    failed_expectations,
    validate_clients,
    validate_dataset,
    write_report,
)
from fedops.data.base import image_summary_frame
from fedops.data.validation import _gx, _run

BETWEEN = "expect_column_values_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
ALL_CLASSES = "expect_column_distinct_values_to_contain_set[label]"
COLUMNS = "expect_table_columns_to_match_ordered_list"
ROW_COUNT = "expect_table_row_count_to_equal"


def failed_train(ds, raw) -> set[str]:
    train, test = validate_dataset(ds, raw)
    assert test.success, failed_expectations(test)  # corruptions are planted in train only
    return set(failed_expectations(train))


# ---- image corruptions (x, y) -> (x, y) -------------------------------------------------


def _nan(x, y):
    x = x.astype(np.float32)
    x[3, 5, 5] = np.nan
    return x, y


def _inf(x, y):
    x = x.astype(np.float32)
    x[7, 0, 0] = np.inf
    return x, y


def _too_bright(x, y):
    x = x.astype(np.int16)
    x[11, 2, 2] = 300
    return x, y


def _negative(x, y):
    x = x.astype(np.int16)
    x[12, 2, 2] = -1
    return x, y


def _unknown_label(num_classes):
    def f(x, y):
        y = y.copy()
        y[5] = num_classes
        return x, y
    return f


def _wrong_shape(x, y):
    return x[:, :, :-1], y


def _missing_class(num_classes):
    def f(x, y):
        y = y.copy()
        y[y == num_classes - 1] = 0
        return x, y
    return f


def _dropped_row(x, y):
    return x[1:], y[1:]


def image_cases(num_classes):
    return {
        "nan": (_nan, {f"{BETWEEN}[nan_count]"}),
        "inf": (_inf, {f"{BETWEEN}[inf_count]"}),
        "pixel_300": (_too_bright, {f"{BETWEEN}[max]"}),
        "pixel_-1": (_negative, {f"{BETWEEN}[min]"}),
        "unknown_label": (_unknown_label(num_classes), {f"{IN_SET}[label]"}),
        "wrong_shape": (_wrong_shape, {f"{BETWEEN}[width]", f"{BETWEEN}[n_pixels]"}),
        "missing_class": (_missing_class(num_classes), {ALL_CLASSES}),
        "dropped_row": (_dropped_row, {ROW_COUNT}),
    }


CASE_NAMES = list(image_cases(10))


def _corrupt(raw, fn):
    x, y = fn(raw.x_train.copy(), raw.y_train.copy())
    return dataclasses.replace(raw, x_train=x, y_train=y)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_fmnist_corruption_detected(fmnist_raw, case):
    fn, expected = image_cases(10)[case]
    ds = DATASETS.build("fashion_mnist")
    assert failed_train(ds, _corrupt(fmnist_raw, fn)) == expected


@pytest.mark.parametrize("case", CASE_NAMES)
def test_synthetic_corruption_detected(synthetic_raw, case):
    ds = DATASETS.build("synthetic")
    fn, expected = image_cases(ds.num_classes)[case]
    assert failed_train(ds, _corrupt(synthetic_raw, fn)) == expected


def test_fmnist_clean_real_data_passes(fmnist_raw):
    ds = DATASETS.build("fashion_mnist")
    reports = validate_dataset(ds, fmnist_raw)
    assert [r.name for r in reports] == ["fashion_mnist/train", "fashion_mnist/test"]
    assert [r.rows for r in reports] == [60_000, 10_000]
    for r in reports:
        assert r.success, failed_expectations(r)
        assert r.error is None
        kinds = {e["expectation"] for e in r.results}
        assert {BETWEEN, IN_SET, NOT_NULL, COLUMNS, ROW_COUNT,
                "expect_column_distinct_values_to_contain_set"} <= kinds


def test_synthetic_clean_passes(synthetic_raw):
    reports = validate_dataset(DATASETS.build("synthetic"), synthetic_raw)
    assert all(r.success for r in reports), [failed_expectations(r) for r in reports]


# ---- Pima -------------------------------------------------------------------------------

LABEL = "diabetes"


def _pima(raw, fn):
    frame = raw.frame_train.copy()
    frame = fn(frame)
    return dataclasses.replace(raw, frame_train=frame)


def _set(col, row, value):
    def f(frame):
        frame[col] = frame[col].astype(object if col == LABEL else float)
        frame.loc[row, col] = value
        return frame
    return f


PIMA_CASES = {
    "nan": (_set("glucose", 4, np.nan), {f"{NOT_NULL}[glucose]"}),
    "inf": (_set("mass", 9, np.inf), {f"{BETWEEN}[mass]"}),
    "glucose_400": (_set("glucose", 2, 400.0), {f"{BETWEEN}[glucose]"}),
    "age_5": (_set("age", 3, 5.0), {f"{BETWEEN}[age]"}),
    "unknown_label": (_set(LABEL, 1, "maybe"), {f"{IN_SET}[{LABEL}]"}),
    "missing_label": (_set(LABEL, 1, None), {f"{NOT_NULL}[{LABEL}]"}),
    "missing_column": (
        lambda f: f.drop(columns=["glucose"]),
        {COLUMNS, f"{BETWEEN}[glucose]", f"{NOT_NULL}[glucose]"},
    ),
    "missing_class": (
        lambda f: f.assign(**{LABEL: "neg"}),
        {f"expect_column_distinct_values_to_contain_set[{LABEL}]"},
    ),
    "dropped_row": (lambda f: f.iloc[1:], {ROW_COUNT}),
}


@pytest.mark.parametrize("case", list(PIMA_CASES))
def test_pima_corruption_detected(pima_raw, case):
    fn, expected = PIMA_CASES[case]
    assert failed_train(DATASETS.build("pima"), _pima(pima_raw, fn)) == expected


def test_pima_clean_real_data_passes(pima_raw):
    reports = validate_dataset(DATASETS.build("pima"), pima_raw)
    assert sum(r.rows for r in reports) == 768
    for r in reports:
        assert r.success, failed_expectations(r)


def test_unreadable_input_gives_error_report(synthetic_raw):
    ds = DATASETS.build("synthetic")
    bad = dataclasses.replace(synthetic_raw, y_train=synthetic_raw.y_train[:-5])  # length mismatch
    train, test = validate_dataset(ds, bad)
    assert not train.success and train.error and "labels" in train.error
    assert test.success


# ---- per-client validation -------------------------------------------------------------


def _split(n, k, seed=0):
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def test_clients_one_bad_client_fails(synthetic_raw):
    ds = DATASETS.build("synthetic")
    idx = _split(synthetic_raw.num_rows("train"), 10)
    x = synthetic_raw.x_train.astype(np.float32)
    x[idx[3][0], 1, 1] = np.nan
    y = synthetic_raw.y_train.copy()
    y[idx[6][:2]] = 99
    raw = dataclasses.replace(synthetic_raw, x_train=x, y_train=y)
    reports = validate_clients(ds, raw, idx)
    assert len(reports) == 10
    assert {r.scope for r in reports} == {"client"}
    bad = {i: failed_expectations(r) for i, r in enumerate(reports) if not r.success}
    assert bad == {3: [f"{BETWEEN}[nan_count]"], 6: [f"{IN_SET}[label]"]}
    label_check = next(e for e in reports[6].results if e["expectation"] == IN_SET)
    assert label_check["unexpected_count"] == 2 and label_check["details"]["unexpected_examples"] == [99, 99]
    assert [r.rows for r in reports] == [len(i) for i in idx]


def test_clients_batched_matches_single_client_runs(synthetic_raw):
    """The stacked (one GX run) evaluation gives the same verdicts and counts as running the
    full client suite on each client's own frame."""
    ds = DATASETS.build("synthetic")
    idx = _split(synthetic_raw.num_rows("train"), 6, seed=1)
    x = synthetic_raw.x_train.astype(np.float32)
    x[idx[0][:3], 0, 0] = np.inf
    x[idx[2][0], 0, 0] = 400
    raw = dataclasses.replace(synthetic_raw, x_train=x)
    batched = validate_clients(ds, raw, idx)
    vd = _gx().definition(ds, "client", "train")
    summary = ds.summary_frame(x, raw.y_train)
    for c, i in enumerate(idx):
        single = _run(vd, summary.iloc[i].reset_index(drop=True), scope="client", name="x")
        assert batched[c].success == single.success
        assert [(e["expectation"], e["column"], e["success"], e["unexpected_count"] or 0)
                for e in batched[c].results] == \
               [(e["expectation"], e["column"], e["success"], e["unexpected_count"] or 0)
                for e in single.results]


def test_clients_empty_and_out_of_range(synthetic_raw):
    ds = DATASETS.build("synthetic")
    n = synthetic_raw.num_rows("train")
    reports = validate_clients(ds, synthetic_raw, [np.arange(10), np.array([], dtype=int), np.array([n])])
    assert reports[0].success
    assert failed_expectations(reports[1]) == ["expect_table_row_count_to_be_between"]
    assert not reports[2].success and "out of range" in reports[2].error


def test_clients_pima_nan(pima_raw):
    ds = DATASETS.build("pima")
    idx = _split(pima_raw.num_rows("train"), 5)
    frame = pima_raw.frame_train.copy()
    frame.loc[idx[1][0], "insulin"] = np.nan
    reports = validate_clients(ds, dataclasses.replace(pima_raw, frame_train=frame), idx)
    assert [r.success for r in reports] == [True, False, True, True, True]
    assert failed_expectations(reports[1]) == [f"{NOT_NULL}[insulin]"]


def test_clients_100_fmnist_fast(fmnist_raw):
    ds = DATASETS.build("fashion_mnist")
    idx = _split(60_000, 100)
    validate_clients(ds, fmnist_raw, idx[:2])  # warm the suite
    t = time.perf_counter()
    reports = validate_clients(ds, fmnist_raw, idx)
    elapsed = time.perf_counter() - t
    assert len(reports) == 100 and all(r.success for r in reports)
    assert elapsed < 20, f"100-client validation took {elapsed:.1f}s"


def test_write_report(tmp_path, synthetic_raw):
    ds = DATASETS.build("synthetic")
    x = synthetic_raw.x_train.astype(np.float32)
    x[0, 0, 0] = np.nan
    reports = validate_dataset(ds, dataclasses.replace(synthetic_raw, x_train=x))
    path = write_report(reports, tmp_path / "out" / "validation.json")
    data = json.loads(path.read_text())
    assert data["success"] is False
    assert data["failed"] == {"synthetic/train": [f"{BETWEEN}[nan_count]"]}
    assert [r["name"] for r in data["reports"]] == ["synthetic/train", "synthetic/test"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["validation.json"]  # no temp files


# ---- summary frame property ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6),
    n_nan=st.integers(0, 4), n_inf=st.integers(0, 4), seed=st.integers(0, 2**16),
)
def test_summary_counts_non_finite(n, h, w, n_nan, n_inf, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w)).astype(np.float64)
    flat = x.reshape(-1)
    pos = rng.permutation(flat.size)[: n_nan + n_inf]
    flat[pos[:n_nan]] = np.nan
    flat[pos[n_nan:]] = -np.inf
    s = image_summary_frame(x, np.zeros(n, dtype=np.int64))
    assert s["nan_count"].sum() == min(n_nan, flat.size)
    assert s["inf_count"].sum() == len(pos) - min(n_nan, flat.size)
    assert (s["height"] == h).all() and (s["width"] == w).all() and (s["n_pixels"] == h * w).all()
    finite = np.isfinite(x.reshape(n, -1))
    for i in range(n):
        if finite[i].any():
            assert s["max"][i] == x[i][np.isfinite(x[i])].max()
