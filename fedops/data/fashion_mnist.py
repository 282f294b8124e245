"""Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey, 10 classes) from IDX files."""

from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fedops.lazy import pd  # pandas on first use: configs load without it

from fedops.data.base import (
    DATASETS,
    DataBundle,
    DataError,
    Dataset,
    RawData,
    Scope,
    Source,
    Split,
    check_image_raw,
    image_expectations,
    image_summary_frame,
    normalise_images,
    verify_hashes,
)

# Debian package dataset-fashion-mnist
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

MEAN, STD = 0.2860, 0.3530
IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dim, images: 3 dims


def read_idx(path: Path, *, expect_magic: int) -> np.ndarray:
    """Read a gzipped IDX (ubyte) file; any problem -> DataError naming the file."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot decompress {path}: {exc}") from exc
    if len(data) < 8:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expect_magic:
        raise DataError(f"{path}: bad IDX magic {magic}, expected {expect_magic}")
    ndim = IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX size {len(data)} bytes does not match header dims {dims} "
            f"({expected} bytes expected; truncated or padded)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _copy_from_dir(directory: Path, dest: Path, origin: str | None = None) -> dict[str, str]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    # accept the files directly or torchvision's <root>/FashionMNIST/raw layout
    for cand in (directory, directory / "FashionMNIST" / "raw", directory / "raw"):
        if all((cand / f).is_file() for f in FILES.values()):
            out = {}
            for fname in FILES.values():
                shutil.copy2(cand / fname, dest / fname)  # keeps the source's permissions
                out[fname] = origin or str(cand / fname)
            return out
    missing = [f for f in FILES.values() if not (directory / f).is_file()]
    raise FileNotFoundError(f"missing {', '.join(missing)} in {directory}")


def _download_torchvision(dest: Path) -> dict[str, str]:
    """torchvision's own download (needs internet); kept separate so tests can stub it."""
    from torchvision.datasets import FashionMNIST as TVFashionMNIST

    with tempfile.TemporaryDirectory() as root:
        TVFashionMNIST(root, train=True, download=True)
        return _copy_from_dir(Path(root), dest, origin="torchvision download (" + ", ".join(TVFashionMNIST.mirrors) + ")")


@DATASETS.register("fashion_mnist")
class FashionMNIST(Dataset):
    name: str = "fashion_mnist"
    path: str | None = None

    install_hint: ClassVar[str] = (
        "Install the Debian package: `apt-get install dataset-fashion-mnist` "
        f"(files in {SYSTEM_DIR}), or set data.path to a directory holding "
        + ", ".join(FILES.values())
    )
    raw_files: ClassVar[tuple[str, ...]] = tuple(FILES.values())
    height: ClassVar[int] = 28
    width: ClassVar[int] = 28
    num_classes: ClassVar[int] = 10
    rows: ClassVar[dict[str, int]] = {"train": 60_000, "test": 10_000}

    def sources(self, *, project_dir: Path) -> list[Source]:
        out: list[Source] = []
        p = self.configured_path(project_dir)
        if p is not None:
            out.append((f"config path {p}", lambda d, p=p: _copy_from_dir(p, d)))
        out.append((f"system package dataset-fashion-mnist ({SYSTEM_DIR})",
                    lambda d: _copy_from_dir(SYSTEM_DIR, d)))
        out.append(("torchvision download", lambda d: _download_torchvision(d)))
        return out

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, self.raw_files)
        arrays = {}
        for key, fname in FILES.items():
            path = raw_dir / fname
            if not path.is_file():
                raise DataError(f"raw file {path} is missing")
            arrays[key] = read_idx(path, expect_magic=2051 if key.endswith("images") else 2049)
        for split in ("train", "test"):
            n_x, n_y = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
            if n_x != n_y:
                raise DataError(
                    f"{raw_dir / FILES[f'{split}_images']} has {n_x} images but "
                    f"{raw_dir / FILES[f'{split}_labels']} has {n_y} labels"
                )
        return RawData(
            name=self.name,
            x_train=arrays["train_images"],
            y_train=arrays["train_labels"].astype(np.int64),
            x_test=arrays["test_images"],
            y_test=arrays["test_labels"].astype(np.int64),
            class_names=CLASS_NAMES,
        )

    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        return image_summary_frame(x, y)

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        return image_expectations(
            scope=scope, height=self.height, width=self.width,
            num_classes=self.num_classes, rows=self.rows[split],
        )

    def to_bundle(self, raw: RawData) -> DataBundle:
        import torch

        check_image_raw(raw)
        return DataBundle(
            name=self.name,
            x_train=normalise_images(raw.x_train, MEAN, STD),
            y_train=torch.as_tensor(np.asarray(raw.y_train, dtype=np.int64)),
            x_test=normalise_images(raw.x_test, MEAN, STD),
            y_test=torch.as_tensor(np.asarray(raw.y_test, dtype=np.int64)),
            num_classes=self.num_classes,
            input_shape=(1, self.height, self.width),
            class_names=CLASS_NAMES,
            groups_train=None,
        )
