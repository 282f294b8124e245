"""prepare (sources, hashes, atomicity) and load_raw (hash check, corrupt files)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from fedops.data import DATASETS, DataError
from fedops.data import fashion_mnist as fm
from fedops.data import pima as pm
from fedops.data.base import HASHES_FILE, sha256_file, write_hashes

PROJECT_DIR = Path(__file__).resolve().parents[2]
LABELS = fm.FILES["train_labels"]


def _no_download(dest):
    raise RuntimeError("download disabled in tests")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(fm, "_download_torchvision", _no_download)


def _rehash(raw_dir: Path) -> None:
    meta = json.loads((raw_dir / HASHES_FILE).read_text())
    write_hashes(raw_dir, {f: m["source"] for f, m in meta.items()})


# ---- prepare -------------------------------------------------------------------------


def test_prepare_fmnist_copies_and_hashes(fmnist_dir):
    hashes = json.loads((fmnist_dir / HASHES_FILE).read_text())
    assert sorted(hashes) == sorted(fm.FILES.values())
    assert sorted(p.name for p in fmnist_dir.iterdir()) == sorted([*fm.FILES.values(), HASHES_FILE])
    for fname, meta in hashes.items():
        assert meta["sha256"] == sha256_file(fmnist_dir / fname)
        assert meta["bytes"] == (fmnist_dir / fname).stat().st_size
        assert meta["source"] == str(fm.SYSTEM_DIR / fname)
        assert sha256_file(fm.SYSTEM_DIR / fname) == meta["sha256"]


def test_config_path_wins(tmp_path, fmnist_dir, offline):
    src = tmp_path / "my-fmnist"
    shutil.copytree(fmnist_dir, src)
    info = DATASETS.build({"name": "fashion_mnist", "path": str(src)}).prepare(
        raw_dir=tmp_path / "raw", project_dir=PROJECT_DIR)
    assert info["source"] == f"config path {src}"
    assert info["tried"] == []
    assert info["files"][LABELS]["source"] == str(src / LABELS)


def test_config_path_is_authoritative(tmp_path, fmnist_dir, offline):
    """A path the user named is the only source: never silently replaced by the system copy;
    its files are copied as they are (a corrupt file is the validate stage's finding)."""
    src = tmp_path / "broken"
    shutil.copytree(fmnist_dir, src)
    (src / LABELS).write_bytes(b"not a gzip file")
    ds = DATASETS.build({"name": "fashion_mnist", "path": str(src)})
    info = ds.prepare(raw_dir=tmp_path / "raw", project_dir=PROJECT_DIR)
    assert info["source"] == f"config path {src}" and info["tried"] == []
    assert (tmp_path / "raw" / LABELS).read_bytes() == b"not a gzip file"
    with pytest.raises(DataError, match=LABELS):
        ds.load_raw(tmp_path / "raw")
    (src / LABELS).unlink()
    with pytest.raises(DataError) as err:
        ds.prepare(raw_dir=tmp_path / "raw2", project_dir=PROJECT_DIR)
    assert f"config path {src}" in str(err.value) and "system package" not in str(err.value)


def test_fmnist_all_sources_missing(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    raw_dir = tmp_path / "data" / "raw" / "fashion_mnist"
    ds = DATASETS.build({"name": "fashion_mnist"})
    with pytest.raises(DataError) as err:
        ds.prepare(raw_dir=raw_dir, project_dir=tmp_path)
    msg = str(err.value)
    assert msg.index("system package") < msg.index("torchvision download")
    assert str(tmp_path / "nowhere") in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert not raw_dir.exists()
    assert list(raw_dir.parent.iterdir()) == []  # no temp dirs left behind


def test_pima_all_sources_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(pm, "SYSTEM_FILE", tmp_path / "nowhere.rda")
    with pytest.raises(DataError) as err:
        DATASETS.build("pima").prepare(raw_dir=tmp_path / "raw" / "pima", project_dir=tmp_path)
    msg = str(err.value)
    assert "r-cran-mlbench" in msg and "apt-get install r-cran-mlbench" in msg
    assert str(tmp_path / "nowhere.rda") in msg
    assert str(tmp_path / pm.EXTRACTED_FILE) in msg
    assert not (tmp_path / "raw" / "pima").exists()


def test_pima_source_order(tmp_path, pima_dir, monkeypatch):
    mine = tmp_path / "mine.rda"
    shutil.copyfile(pima_dir / pm.RDA_NAME, mine)
    info = DATASETS.build({"name": "pima", "path": str(mine)}).prepare(
        raw_dir=tmp_path / "raw", project_dir=PROJECT_DIR)
    assert info["source"] == f"config path {mine}"
    # without a config path and without the system package: the extracted copy
    project = tmp_path / "project"
    (project / pm.EXTRACTED_FILE).parent.mkdir(parents=True)
    shutil.copyfile(mine, project / pm.EXTRACTED_FILE)
    monkeypatch.setattr(pm, "SYSTEM_FILE", tmp_path / "nowhere.rda")
    info = DATASETS.build("pima").prepare(raw_dir=tmp_path / "raw2", project_dir=project)
    assert info["source"].startswith("extracted package copy")
    assert info["files"][pm.RDA_NAME]["source"] == str(project / pm.EXTRACTED_FILE)


def test_failed_prepare_keeps_existing_raw_dir(tmp_path, monkeypatch, offline):
    raw_dir = tmp_path / "raw" / "fashion_mnist"
    raw_dir.mkdir(parents=True)
    (raw_dir / "keep.txt").write_text("old")
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError):
        DATASETS.build("fashion_mnist").prepare(raw_dir=raw_dir, project_dir=tmp_path)
    assert [p.name for p in raw_dir.parent.iterdir()] == ["fashion_mnist"]
    assert (raw_dir / "keep.txt").read_text() == "old"


def test_prepare_replaces_existing_raw_dir(tmp_path):
    raw_dir = tmp_path / "raw" / "synthetic"
    raw_dir.mkdir(parents=True)
    (raw_dir / "stale.txt").write_text("old")
    ds = DATASETS.build({"name": "synthetic", "num_train": 40, "num_test": 20})
    ds.prepare(raw_dir=raw_dir, project_dir=tmp_path)
    assert sorted(p.name for p in raw_dir.iterdir()) == ["data.npz", HASHES_FILE]
    assert [p.name for p in raw_dir.parent.iterdir()] == ["synthetic"]
    raw = ds.load_raw(raw_dir)
    assert raw.x_train.shape == (40, 8, 8) and raw.x_train.dtype == np.uint8


# ---- load_raw: hashes and corrupt files -------------------------------------------------


@pytest.fixture
def fm_copy(tmp_path, fmnist_dir) -> Path:
    d = tmp_path / "fashion_mnist"
    shutil.copytree(fmnist_dir, d)
    return d


def _flip(path: Path, at: int, n: int = 8) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, at + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_hash_mismatch_names_file(fm_copy):
    _flip(fm_copy / LABELS, 2000)
    with pytest.raises(DataError, match=f"sha256 mismatch.*{LABELS}"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_missing_hashes_file(fm_copy):
    (fm_copy / HASHES_FILE).unlink()
    with pytest.raises(DataError, match="hashes.json not found"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_flipped_bytes_in_gzip(fm_copy):
    _flip(fm_copy / LABELS, 2000)
    _rehash(fm_copy)  # hashes agree: the parser must catch it
    with pytest.raises(DataError, match=f"cannot decompress .*{LABELS}"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_truncated_gzip(fm_copy):
    path = fm_copy / LABELS
    path.write_bytes(path.read_bytes()[:-500])
    _rehash(fm_copy)
    with pytest.raises(DataError, match=LABELS):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_truncated_idx_payload(fm_copy):
    path = fm_copy / LABELS
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-10])
    _rehash(fm_copy)
    with pytest.raises(DataError, match=f"{LABELS}: IDX size"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_bad_idx_magic(fm_copy):
    path = fm_copy / LABELS
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 2051, 3) + bytes(3))
    _rehash(fm_copy)
    with pytest.raises(DataError, match=f"{LABELS}: bad IDX magic 2051"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_label_count_mismatch(fm_copy):
    path = fm_copy / LABELS
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, 3) + bytes(3))
    _rehash(fm_copy)
    with pytest.raises(DataError, match="60000 images but .* has 3 labels"):
        DATASETS.build("fashion_mnist").load_raw(fm_copy)


def test_fmnist_raw_contents(fmnist_raw):
    assert fmnist_raw.x_train.shape == (60_000, 28, 28) and fmnist_raw.x_train.dtype == np.uint8
    assert fmnist_raw.x_test.shape == (10_000, 28, 28)
    assert fmnist_raw.y_train.dtype == np.int64
    assert np.bincount(fmnist_raw.y_train).tolist() == [6000] * 10
    assert len(fmnist_raw.class_names) == 10


def test_pima_corrupt_rda(tmp_path, pima_dir):
    d = tmp_path / "pima"
    shutil.copytree(pima_dir, d)
    path = d / pm.RDA_NAME
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"sha256 mismatch.*{pm.RDA_NAME}|{pm.RDA_NAME} has"):
        DATASETS.build("pima").load_raw(d)
    _rehash(d)
    with pytest.raises(DataError, match=f"cannot read .*{pm.RDA_NAME}"):
        DATASETS.build("pima").load_raw(d)


def test_synthetic_corrupt_npz(tmp_path):
    ds = DATASETS.build({"name": "synthetic", "num_train": 40, "num_test": 20})
    d = tmp_path / "synthetic"
    ds.prepare(raw_dir=d, project_dir=tmp_path)
    _flip(d / "data.npz", 100, 50)
    with pytest.raises(DataError, match="sha256 mismatch.*data.npz"):
        ds.load_raw(d)
    _rehash(d)
    with pytest.raises(DataError, match="data.npz"):
        ds.load_raw(d)


def test_idx_reader_matches_torchvision(tmp_path):
    """Our IDX reader (strict, with clear errors) agrees with torchvision's FashionMNIST parser."""
    import gzip as _gzip

    from torchvision.datasets.mnist import read_image_file, read_label_file

    from fedops.data.fashion_mnist import SYSTEM_DIR, read_idx

    if not (SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    for name, magic, tv_read in (("t10k-images-idx3-ubyte", 2051, read_image_file),
                                 ("t10k-labels-idx1-ubyte", 2049, read_label_file)):
        plain = tmp_path / name
        plain.write_bytes(_gzip.decompress((SYSTEM_DIR / f"{name}.gz").read_bytes()))
        ours = read_idx(SYSTEM_DIR / f"{name}.gz", expect_magic=magic)
        assert np.array_equal(ours, tv_read(str(plain)).numpy())
