"""to_bundle: normalisation, Pima split (deterministic, stratified, train-only stats),
synthetic data (deterministic, learnable), registry wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from fedops.data import DATASETS, DataBundle, DataError
from fedops.data import pima as pm

FEATURES = list(pm.FEATURES)


def test_registry():
    assert DATASETS.keys() == ["adult", "compas", "fashion_mnist", "pima", "synthetic", "tabular"]
    ds = DATASETS.build({"name": "pima", "test_fraction": 0.3, "split_seed": 4})
    assert ds.params() == {"path": None, "test_fraction": 0.3, "split_seed": 4}
    assert DATASETS.build({"name": "fashion_mnist", "path": None}).path is None
    with pytest.raises(pydantic.ValidationError):
        DATASETS.build({"name": "fashion_mnist", "root": "x"})
    with pytest.raises(pydantic.ValidationError):
        DATASETS.build({"name": "pima", "test_fraction": 1.5})


def test_fmnist_bundle(fmnist_raw):
    b = DATASETS.build("fashion_mnist").to_bundle(fmnist_raw)
    assert isinstance(b, DataBundle)
    assert b.x_train.shape == (60_000, 1, 28, 28) and b.x_train.dtype == torch.float32
    assert b.x_test.shape == (10_000, 1, 28, 28)
    assert b.y_train.dtype == torch.int64 and b.y_train.shape == (60_000,)
    assert (b.num_classes, b.input_shape, b.groups_train) == (10, (1, 28, 28), None)
    expected = (fmnist_raw.x_train[123].astype(np.float32) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(b.x_train[123, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert abs(b.x_train.mean().item()) < 0.01 and abs(b.x_train.std().item() - 1) < 0.01
    assert torch.equal(b.y_test, torch.from_numpy(fmnist_raw.y_test))


def _full_pima(pima_dir) -> pd.DataFrame:
    return DATASETS.build("pima").read_frame(pima_dir / pm.RDA_NAME)


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[[*FEATURES, "diabetes"]].astype(str).to_numpy()))


def test_pima_split_deterministic_stratified(pima_dir, pima_raw):
    full = _full_pima(pima_dir)
    assert len(full) == 768
    again = DATASETS.build("pima").load_raw(pima_dir)
    pd.testing.assert_frame_equal(again.frame_train, pima_raw.frame_train)
    pd.testing.assert_frame_equal(again.frame_test, pima_raw.frame_test)
    tr, te = pima_raw.frame_train, pima_raw.frame_test
    assert (len(tr), len(te)) == (614, 154)
    # a partition of the 768 rows
    assert _rows(pd.concat([tr, te])) == _rows(full)
    # stratified: class shares equal to the full data within one row
    for frame in (tr, te):
        share = (frame["diabetes"] == "pos").mean()
        assert abs(share - 268 / 768) <= 1 / len(frame)
    assert te["diabetes"].value_counts().to_dict() == {"neg": 100, "pos": 54}
    other = DATASETS.build({"name": "pima", "split_seed": 1}).load_raw(pima_dir)
    assert _rows(other.frame_test) != _rows(te)
    assert len(other.frame_test) == 154


def test_pima_bundle_uses_train_stats_only(pima_raw):
    b = DATASETS.build("pima").to_bundle(pima_raw)
    assert b.x_train.shape == (614, 8) and b.x_test.shape == (154, 8)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert (b.num_classes, b.input_shape, b.class_names) == (2, (8,), ("neg", "pos"))
    np.testing.assert_allclose(b.x_train.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(b.x_train.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    tr = pima_raw.frame_train[FEATURES].to_numpy(float)
    te = pima_raw.frame_test[FEATURES].to_numpy(float)
    np.testing.assert_allclose(b.x_test.numpy(), (te - tr.mean(0)) / tr.std(0), rtol=1e-5, atol=1e-5)
    # test stats are not what was used
    assert not np.allclose(b.x_test.mean(0).numpy(), 0, atol=1e-3)
    assert b.y_train.tolist() == (pima_raw.frame_train["diabetes"] == "pos").astype(int).tolist()
    assert b.y_test.sum().item() == 54


def test_pima_bundle_rejects_unknown_label(pima_raw):
    import dataclasses

    frame = pima_raw.frame_train.copy()
    frame.loc[0, "diabetes"] = "maybe"
    with pytest.raises(DataError, match="maybe"):
        DATASETS.build("pima").to_bundle(dataclasses.replace(pima_raw, frame_train=frame))


def test_synthetic_deterministic_and_learnable(tmp_path):
    ds = DATASETS.build({"name": "synthetic", "num_train": 400, "num_test": 200, "num_classes": 5})
    a, b = ds.generate(), ds.generate()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["x_train"], DATASETS.build({"name": "synthetic", "seed": 1}).generate()["x_train"][:400])
    ds.prepare(raw_dir=tmp_path / "s", project_dir=tmp_path)
    raw = ds.load_raw(tmp_path / "s")
    assert np.bincount(raw.y_train).tolist() == [80] * 5
    bundle = ds.to_bundle(raw)
    assert bundle.x_train.shape == (400, 1, 8, 8) and bundle.input_shape == (1, 8, 8)
    assert bundle.class_names == tuple(f"class_{i}" for i in range(5))
    # nearest class mean separates the classes: a small CNN can learn it
    xtr, ytr = bundle.x_train.flatten(1), bundle.y_train
    means = torch.stack([xtr[ytr == c].mean(0) for c in range(5)])
    pred = torch.cdist(bundle.x_test.flatten(1), means).argmin(1)
    assert (pred == bundle.y_test).float().mean().item() > 0.9
