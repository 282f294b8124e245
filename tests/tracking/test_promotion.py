"""The registry's `current` alias, on a real MLflow store with real torch models: a worse version
does not take it, a better one (or one within the margin) does, and every version carries the
reason as a tag. The models are logged the way runs log them (exported program with a signature
and an input example) and load back with `mlflow.pytorch.load_model`."""

import numpy as np
import pytest
import torch
from torch import nn

from fedops.tracking.mlflow_tracker import RunTracker
from fedops.tracking.promotion import ACCURACY_TAG, ALIAS, TEST_SET_TAG, decide, model_accuracy, dataset_digest


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(quality: str) -> nn.Module:
    """A linear classifier: 'good' separates the classes, 'bad' predicts the opposite class."""
    net = nn.Linear(4, 2)
    with torch.no_grad():
        w = torch.tensor([1.0, 0.5, 0.0, 0.0])
        sign = 1.0 if quality == "good" else -1.0
        net.weight.copy_(torch.stack([-sign * w, sign * w]))
        net.bias.zero_()
    return net.eval()


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"


def _register(store, quality: str, name: str = "promo"):
    uri, artifacts = store
    tracker = RunTracker(tracking_uri=uri, experiment="promotion", artifact_dir=artifacts, run_name=quality)
    x, _ = _data()
    model_uri = tracker.log_model(_model(quality), input_example=x[:2])
    version = tracker.register(model_uri, name)
    tracker.end("FINISHED")
    return tracker, version


def test_a_worse_version_keeps_out_of_current_and_a_better_one_takes_it(store):
    x, y = _data()
    accuracy = lambda model_uri: model_accuracy(model_uri, x, y)  # noqa: E731
    bad, v1 = _register(store, "bad")
    first = decide(bad.client, name="promo", version=v1, margin=0.02, accuracy_of=accuracy)
    assert first.promoted and first.accuracy < 0.1  # the first version takes the alias whatever it scores

    good, v2 = _register(store, "good")
    better = decide(good.client, name="promo", version=v2, margin=0.02, accuracy_of=accuracy)
    assert better.promoted and better.accuracy > 0.95 and better.previous_version == v1
    assert str(good.client.get_model_version_by_alias("promo", ALIAS).version) == v2

    worse, v3 = _register(store, "bad")
    refused = decide(worse.client, name="promo", version=v3, margin=0.02, accuracy_of=accuracy)
    assert not refused.promoted and refused.previous_version == v2
    assert str(worse.client.get_model_version_by_alias("promo", ALIAS).version) == v2  # unchanged
    tags = {v: worse.client.get_model_version("promo", v).tags["fedops.promotion"] for v in (v1, v2, v3)}
    assert tags[v2].startswith("promoted") and tags[v3].startswith("not promoted")
    assert f"{refused.accuracy:.4f}" in tags[v3] and f"{refused.previous_accuracy:.4f}" in tags[v3]


def test_within_the_margin_a_slightly_worse_version_is_promoted(store):
    x, y = _data()
    good, v1 = _register(store, "good")
    decide(good.client, name="promo", version=v1, margin=0.0, accuracy_of=lambda uri: 0.90)
    again, v2 = _register(store, "good")
    scores = {f"models:/promo/{v1}": 0.90, f"models:/promo/{v2}": 0.89}
    near = decide(again.client, name="promo", version=v2, margin=0.02, accuracy_of=scores.__getitem__)
    assert near.promoted and str(again.client.get_model_version_by_alias("promo", ALIAS).version) == v2
    strict, v3 = _register(store, "good")
    scores[f"models:/promo/{v3}"] = 0.88
    out = decide(strict.client, name="promo", version=v3, margin=0.0, accuracy_of=scores.__getitem__)
    assert not out.promoted


def test_the_logged_model_loads_back_without_pickle_and_has_a_signature(store, monkeypatch):
    import pickle
    from pathlib import Path

    import mlflow.pytorch
    from mlflow.models import get_model_info

    tracker, version = _register(store, "good")
    info = get_model_info(f"models:/promo/{version}")
    assert info.signature is not None and info.saved_input_example_info is not None
    stored = {p.relative_to(p.parents[1]).as_posix() for p in Path(store[1]).rglob("data/*")}
    assert stored == {"data/model.pt2"}, stored  # an exported program, no pickled module

    def refuse(*args, **kwargs):
        raise AssertionError("loading the registered model ran pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded = mlflow.pytorch.load_model(f"models:/promo/{version}")
    monkeypatch.undo()
    x, _ = _data()
    with torch.no_grad():
        assert torch.allclose(loaded(torch.as_tensor(x)), _model("good")(torch.as_tensor(x)), atol=1e-6)


def test_a_recorded_accuracy_on_the_same_test_set_is_read_not_measured_again(store):
    """The holder's accuracy comes from its tags when they record this test set; on another test
    set (or with no tags) its model is loaded and evaluated, and the tags then record it."""
    x, y = _data()
    digest = dataset_digest(x, y)
    loaded: list[str] = []

    def accuracy(model_uri):
        loaded.append(model_uri)
        return model_accuracy(model_uri, x, y)

    good, v1 = _register(store, "good")
    first = decide(good.client, name="promo", version=v1, margin=0.0, accuracy_of=accuracy, test_set=digest,
                   accuracy=0.97)
    assert first.promoted and first.accuracy == 0.97 and loaded == []  # measured by the caller
    tags = good.client.get_model_version("promo", v1).tags
    assert tags[TEST_SET_TAG] == digest and float(tags[ACCURACY_TAG]) == 0.97

    worse, v2 = _register(store, "bad")
    refused = decide(worse.client, name="promo", version=v2, margin=0.0, accuracy_of=accuracy, test_set=digest)
    assert loaded == [f"models:/promo/{v2}"]  # the new version measured, the holder's read from its tags
    assert not refused.promoted and refused.previous_accuracy == 0.97 and refused.accuracy < 0.1

    other = dataset_digest(x[:200], y[:200])
    assert other != digest and dataset_digest(x.astype(np.float64), y) != digest
    again, v3 = _register(store, "good")
    decide(again.client, name="promo", version=v3, margin=0.0, accuracy_of=accuracy, test_set=other, accuracy=0.5)
    assert loaded[1:] == [f"models:/promo/{v1}"]  # another test set: the holder is evaluated again
    tags = again.client.get_model_version("promo", v1).tags
    assert tags[TEST_SET_TAG] == other and float(tags[ACCURACY_TAG]) == model_accuracy(f"models:/promo/{v1}", x, y)
