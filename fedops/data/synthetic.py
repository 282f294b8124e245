"""Synthetic class-conditional images for tests and tiny end-to-end runs.

Each class has a fixed random template in [0, 1]; a sample is its class template plus
Gaussian noise (``noise``), clipped and stored as uint8 ``[N, H, W]``.  Labels are balanced
(every class present).  ``prepare`` writes ``data.npz`` + ``hashes.json`` like any other
dataset, so the pipeline is uniform.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fedops.lazy import pd  # pandas on first use: configs load without it
from pydantic import Field

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

NPZ_NAME = "data.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    name: str = "synthetic"
    num_train: int = Field(600, ge=1)
    num_test: int = Field(200, ge=1)
    num_classes: int = Field(4, ge=2)
    image_size: int = Field(8, ge=2)
    seed: int = 0
    noise: float = Field(0.3, ge=0.0)

    install_hint: ClassVar[str] = "(synthetic data is generated; nothing to install)"
    raw_files: ClassVar[tuple[str, ...]] = (NPZ_NAME,)

    def generate(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        s = self.image_size
        templates = rng.uniform(0.0, 1.0, size=(self.num_classes, s, s))

        def make(n: int) -> tuple[np.ndarray, np.ndarray]:
            y = rng.permutation(np.arange(n) % self.num_classes).astype(np.int64)
            x = templates[y] + self.noise * rng.standard_normal((n, s, s))
            return np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8), y

        x_train, y_train = make(self.num_train)
        x_test, y_test = make(self.num_test)
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}

    def sources(self, *, project_dir: Path) -> list[Source]:
        def write(dest: Path) -> dict[str, str]:
            np.savez_compressed(dest / NPZ_NAME, **self.generate())
            return {NPZ_NAME: f"generated ({self.params()})"}

        return [("generator", write)]

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, self.raw_files)
        path = raw_dir / NPZ_NAME
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in KEYS}
        except FileNotFoundError as exc:
            raise DataError(f"raw file {path} is missing") from exc
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        return RawData(
            name=self.name,
            x_train=arrays["x_train"],
            y_train=arrays["y_train"].astype(np.int64),
            x_test=arrays["x_test"],
            y_test=arrays["y_test"].astype(np.int64),
            class_names=self.class_names,
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(f"class_{i}" for i in range(self.num_classes))

    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        return image_summary_frame(x, y)

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        rows = self.num_train if split == "train" else self.num_test
        return image_expectations(
            scope=scope, height=self.image_size, width=self.image_size,
            num_classes=self.num_classes, rows=rows,
        )

    def to_bundle(self, raw: RawData) -> DataBundle:
        import torch

        check_image_raw(raw)
        scaled = raw.x_train.astype(np.float64) / 255.0
        mean, std = float(scaled.mean()), float(scaled.std()) or 1.0
        return DataBundle(
            name=self.name,
            x_train=normalise_images(raw.x_train, mean, std),
            y_train=torch.as_tensor(np.asarray(raw.y_train, dtype=np.int64)),
            x_test=normalise_images(raw.x_test, mean, std),
            y_test=torch.as_tensor(np.asarray(raw.y_test, dtype=np.int64)),
            num_classes=self.num_classes,
            input_shape=(1, self.image_size, self.image_size),
            class_names=self.class_names,
            groups_train=None,
        )
