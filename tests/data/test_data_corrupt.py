"""Simulated missing values on chosen clients: exactly the asked share of the clients' feature
cells, nothing else touched, seeded; the client's own validation fails; training data is finite."""

import numpy as np
import pytest

from fedops.data import DATASETS, DataError, validate_clients
from fedops.data.corrupt import with_missing_values


def _split(n, k):
    return [np.arange(n)[i::k] for i in range(k)]


def test_only_the_chosen_clients_lose_exactly_rate_of_their_cells(pima_raw):
    idx = _split(pima_raw.num_rows("train"), 3)
    out = with_missing_values(pima_raw, rows={2: idx[2]}, rate=0.5, seed=0)
    features = [c for c in out.frame_train.columns if c != "diabetes"]
    missing = out.frame_train[features].isna().to_numpy()
    assert missing[idx[2]].sum() == round(0.5 * len(idx[2]) * len(features))
    assert not missing[np.concatenate([idx[0], idx[1]])].any()
    assert out.frame_train["diabetes"].equals(pima_raw.frame_train["diabetes"])
    assert not pima_raw.frame_train[features].isna().any().any()  # the input is not modified
    same = with_missing_values(pima_raw, rows={2: idx[2]}, rate=0.5, seed=0)
    assert np.array_equal(missing, same.frame_train[features].isna().to_numpy())
    other = with_missing_values(pima_raw, rows={2: idx[2]}, rate=0.5, seed=1)
    assert not np.array_equal(missing, other.frame_train[features].isna().to_numpy())


def test_the_bad_client_fails_its_own_validation_and_training_data_stays_finite(pima_raw):
    ds = DATASETS.build("pima")
    idx = _split(pima_raw.num_rows("train"), 3)
    bad = with_missing_values(pima_raw, rows={2: idx[2]}, rate=0.3, seed=0)
    reports = validate_clients(ds, bad, idx)
    assert [r.success for r in reports] == [True, True, False]
    bundle, clean = ds.to_bundle(bad), ds.to_bundle(pima_raw)
    assert bundle.x_train.isfinite().all() and bundle.x_test.isfinite().all()
    # a gap takes the raw data's missing-value code 0, standardised with statistics of the observed cells
    frame = bad.frame_train.drop(columns=["diabetes"]).to_numpy(dtype=float)
    row, col = np.argwhere(np.isnan(frame))[0]
    mean, std = np.nanmean(frame[:, col]), np.nanstd(frame[:, col])
    assert float(bundle.x_train[row, col]) == pytest.approx((0 - mean) / std, rel=1e-5)
    assert clean.x_train.shape == bundle.x_train.shape


def test_bad_input_is_refused(pima_raw, synthetic_raw):
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\], got 0"):
        with_missing_values(pima_raw, rows={0: np.arange(3)}, rate=0, seed=0)
    with pytest.raises(DataError, match="only be simulated on tabular data"):
        with_missing_values(synthetic_raw, rows={0: np.arange(3)}, rate=0.5, seed=0)
    with pytest.raises(ValueError, match="client 1: row positions out of range"):
        with_missing_values(pima_raw, rows={1: np.array([10**6])}, rate=0.5, seed=0)
