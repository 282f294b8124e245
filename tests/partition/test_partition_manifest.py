"""Manifest build / save / load round trip, validation and the heat map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedops.partition import (
    PARTITIONERS,
    build_manifest,
    load_manifest,
    partition_labels,
    label_heatmap_figure,
    plot_label_heatmap,
    save_manifest,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 10, 2_000)


@pytest.fixture
def manifest(labels):
    spec = {"name": "dirichlet", "alpha": 0.3, "min_size": 5}
    part = partition_labels(spec, labels, num_clients=8, seed=11)
    return build_manifest(part, labels, dataset="mnist", partitioner=PARTITIONERS.build(spec),
                          seed=11, num_classes=10), part


def test_manifest_contents(manifest, labels):
    m, part = manifest
    assert m["dataset"] == "mnist" and m["partitioner"] == "dirichlet"
    assert m["params"] == {"alpha": 0.3, "min_size": 5, "max_tries": 1000}
    assert (m["seed"], m["num_clients"], m["num_samples"], m["num_classes"]) == (11, 8, 2000, 10)
    for i, client in enumerate(m["clients"]):
        assert client["id"] == i
        assert client["size"] == len(client["indices"]) == part.indices[i].size
        assert client["label_histogram"] == np.bincount(labels[client["indices"]], minlength=10).tolist()
        assert client["meta"] == {}
    json.dumps(m)  # JSON-ready: plain Python types only


def test_round_trip(manifest, tmp_path):
    m, part = manifest
    path = save_manifest(m, tmp_path / "sub" / "partition.json")
    loaded_part, loaded = load_manifest(path)
    assert loaded_part == part
    assert loaded == m
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["partition.json"]  # no temp left


def test_round_trip_keeps_client_meta(tmp_path):
    labels = np.zeros(12, dtype=int)
    spec = {"name": "feature_skew", "kind": "rotation", "max_rotation_deg": 30}
    part = partition_labels(spec, labels, num_clients=3, seed=0)
    m = build_manifest(part, labels, dataset="toy", partitioner=PARTITIONERS.build(spec), seed=0,
                       num_classes=1)
    loaded_part, _ = load_manifest(save_manifest(m, tmp_path / "m.json"))
    assert loaded_part.client_meta == part.client_meta == (
        {"rotation_deg": 0.0}, {"rotation_deg": 15.0}, {"rotation_deg": 30.0})


def test_save_overwrites_atomically(manifest, tmp_path):
    m, _ = manifest
    path = tmp_path / "m.json"
    path.write_text("old")
    save_manifest(m, path)
    assert json.loads(path.read_text()) == m


def _write(tmp_path, m):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(m))
    return path


def test_duplicate_index_across_clients_refused(manifest, tmp_path):
    m, _ = manifest
    dup = m["clients"][2]["indices"][0]
    m["clients"][5]["indices"].append(dup)
    m["clients"][5]["size"] += 1
    with pytest.raises(ValueError, match=f"index {dup} appears twice \\(clients 2 and 5\\)"):
        load_manifest(_write(tmp_path, m))


def test_duplicate_index_within_a_client_refused(manifest, tmp_path):
    m, _ = manifest
    m["clients"][3]["indices"].insert(0, m["clients"][3]["indices"][0])
    m["clients"][3]["size"] += 1
    with pytest.raises(ValueError, match=r"appears twice \(clients 3 and 3\)"):
        load_manifest(_write(tmp_path, m))


@pytest.mark.parametrize("bad", [-1, 2000])
def test_out_of_range_index_refused(manifest, tmp_path, bad):
    m, _ = manifest
    m["clients"][4]["indices"][0] = bad
    with pytest.raises(ValueError, match=f"client 4 has index {bad} outside \\[0, 2000\\)"):
        load_manifest(_write(tmp_path, m))


def test_malformed_manifests_refused(manifest, tmp_path):
    m, _ = manifest
    with pytest.raises(ValueError, match="missing keys \\['seed'\\]"):
        load_manifest(_write(tmp_path, {k: v for k, v in m.items() if k != "seed"}))
    with pytest.raises(ValueError, match="num_clients=9 but 8 clients listed"):
        load_manifest(_write(tmp_path, {**m, "num_clients": 9}))
    bad = json.loads(json.dumps(m))
    bad["clients"][1]["size"] = 1
    with pytest.raises(ValueError, match="client 1 size=1"):
        load_manifest(_write(tmp_path, bad))


def test_build_manifest_checks_labels_against_num_classes(manifest, labels):
    _, part = manifest
    with pytest.raises(ValueError, match="label 9 is out of range for num_classes=5"):
        build_manifest(part, labels, dataset="x", partitioner=PARTITIONERS.build("iid"), seed=0,
                       num_classes=5)


@pytest.mark.parametrize("max_rows", [100, 3])
def test_heatmap_is_a_png(manifest, tmp_path, max_rows):
    m, _ = manifest
    path = plot_label_heatmap(m, tmp_path / "plots" / "heat.png", max_rows=max_rows)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def _synthetic_manifest(num_clients: int, num_classes: int = 10) -> dict:
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 50, size=(num_clients, num_classes))
    return {"dataset": "fashion_mnist", "partitioner": "dirichlet", "params": {"alpha": 0.5, "min_size": 10},
            "num_clients": num_clients, "num_classes": num_classes,
            "clients": [{"label_histogram": h.tolist()} for h in hist]}


@pytest.mark.parametrize("num_clients", [20, 1000])
def test_heatmap_reads_at_20_and_1000_clients(num_clients):
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    m = _synthetic_manifest(num_clients)
    fig = label_heatmap_figure(m, class_names=names)
    (ax, _colorbar) = fig.axes
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    ylabels = [t.get_text() for t in ax.get_yticklabels()]
    rows = ax.images[0].get_array().shape[0]
    if num_clients == 20:
        assert ylabels == [str(i) for i in range(20)] and rows == 20  # integer ids, one row per client
    else:
        assert rows == 60 and ylabels[0] == "0-16" and ylabels[-1].endswith("-999")  # grouped rows
        summed = ax.images[0].get_array().sum()
        assert summed == sum(sum(c["label_histogram"]) for c in m["clients"])  # nothing dropped
        assert len(ylabels) <= 30
    title = ax.title
    box, figure = title.get_window_extent(), fig.bbox
    assert box.x0 >= figure.x0 and box.x1 <= figure.x1 and box.y1 <= figure.y1  # the title fits
    assert str(num_clients) in title.get_text() and "dirichlet" in title.get_text()
