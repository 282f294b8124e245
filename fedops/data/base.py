"""Dataset plug-ins: common types and helpers.

A dataset plug-in does four things, each a method:

``prepare``
    find the raw files (config path first, then system copies, then a download where one
    exists), copy them into ``raw_dir`` and write ``raw_dir/hashes.json``; atomic.
``load_raw``
    verify the files against ``hashes.json`` and parse them into :class:`RawData`
    (still raw: uint8 images / the original table).
``summary_frame`` / ``expectations``
    what Great Expectations validates: a per-sample summary (images) or the table itself
    (tabular), and the expectation list for ``scope="global"`` (a whole split) or
    ``scope="client"`` (one client's rows).
``to_bundle``
    the training tensors (:class:`DataBundle`), normalised.

Heavy imports (torch, great_expectations, rdata) are done lazily inside the methods.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Sequence

import numpy as np

from fedops.errors import FedopsError
from fedops.lazy import pd  # pandas on first use: configs load without it
from fedops.registry import PluginModel, Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DATASETS: Registry = Registry("dataset", entry_points="fedops.datasets")

HASHES_FILE = "hashes.json"

Scope = Literal["global", "client"]
Split = Literal["train", "test"]


class DataError(FedopsError):
    """A data problem (missing source, corrupt file, hash mismatch, bad content)."""


# --------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawData:
    """Parsed but untransformed data.

    Images: ``x_*`` uint8 ``[N, H, W]`` and ``y_*`` int64 ``[N]``.
    Tabular: ``frame_train`` / ``frame_test`` (features + ``label_column``).
    """

    name: str
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    frame_train: pd.DataFrame | None = None
    frame_test: pd.DataFrame | None = None
    label_column: str | None = None
    class_names: tuple[str, ...] = ()

    @property
    def kind(self) -> Literal["image", "tabular"]:
        return "tabular" if self.frame_train is not None else "image"

    def xy(self, split: Split) -> tuple[Any, Any]:
        """``(x, y)`` of one split: arrays for images; (features frame, label series or
        ``None`` when the label column is missing) for tabular data."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.kind == "image":
            return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        frame: pd.DataFrame = getattr(self, f"frame_{split}")
        if self.label_column in frame.columns:
            return frame.drop(columns=[self.label_column]), frame[self.label_column]
        return frame, None

    def num_rows(self, split: Split) -> int:
        x, _ = self.xy(split)
        return len(x)


@dataclass(frozen=True)
class DataBundle:
    """What training uses: float32 normalised inputs, int64 labels."""

    name: str
    x_train: "torch.Tensor"  # float32, images [N,1,H,W], tabular [N,F]
    y_train: "torch.Tensor"  # int64 [N]
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    groups_train: np.ndarray | None = None
    sensitive_train: np.ndarray | None = None
    """Group index of each training row under the sensitive attribute (None: the data set has none)."""
    sensitive_test: np.ndarray | None = None
    sensitive_name: str | None = None
    sensitive_groups: tuple[str, ...] = ()
    """Group names, by index (binary: ``(not privileged, privileged)``)."""
    columns_train: dict[str, np.ndarray] | None = None
    """The training rows' categorical columns as strings (``natural_id`` by a column)."""


# --------------------------------------------------------------------------------------
# file helpers
# --------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_hashes(directory: Path, sources: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Hash every file named in ``sources`` ({file name: where it came from})."""
    hashes = {
        fname: {
            "sha256": sha256_file(directory / fname),
            "bytes": (directory / fname).stat().st_size,
            "source": src,
        }
        for fname, src in sorted(sources.items())
    }
    (directory / HASHES_FILE).write_text(json.dumps(hashes, indent=2) + "\n")
    return hashes


def verify_hashes(raw_dir: Path, expected_files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Check ``raw_dir`` against its ``hashes.json``; raise :class:`DataError` naming the file."""
    raw_dir = Path(raw_dir)
    hfile = raw_dir / HASHES_FILE
    if not hfile.is_file():
        raise DataError(f"{hfile} not found: run prepare first")
    try:
        hashes = json.loads(hfile.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{hfile} is unreadable: {exc}") from exc
    if not isinstance(hashes, dict):
        raise DataError(f"{hfile} is not a mapping of file -> hash")
    for fname in expected_files:
        if fname not in hashes:
            raise DataError(f"{hfile} has no entry for {fname}")
    for fname, meta in hashes.items():
        path = raw_dir / fname
        if not path.is_file():
            raise DataError(f"raw file {path} is missing")
        size = path.stat().st_size
        if "bytes" in meta and size != meta["bytes"]:
            raise DataError(
                f"raw file {path} has {size} bytes, hashes.json says {meta['bytes']}"
            )
        digest = sha256_file(path)
        if digest != meta.get("sha256"):
            raise DataError(
                f"sha256 mismatch for raw file {path}: {digest} != {meta.get('sha256')} "
                "(file changed since prepare)"
            )
    return hashes


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` by the finished directory ``tmp`` (rename, old copy removed)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# A source: human-readable description and a function that fills a directory with the raw
# files and returns {file name: origin}.  It raises on failure.
Source = tuple[str, Callable[[Path], dict[str, str]]]


# --------------------------------------------------------------------------------------
# base plug-in
# --------------------------------------------------------------------------------------


class Dataset(PluginModel):
    """Base of the dataset plug-ins (see module docstring)."""

    install_hint: ClassVar[str] = ""
    raw_files: ClassVar[tuple[str, ...]] = ()
    tabular: ClassVar[bool] = False

    @property
    def sensitive_attribute(self) -> str | None:
        """The column fairness is measured over (None: this data set has no sensitive attribute)."""
        return None

    @property
    def num_groups(self) -> int:
        return 0

    # ---- to implement -------------------------------------------------------------

    def configured_path(self, project_dir: Path) -> Path | None:
        """``path`` from the config (relative paths are relative to the project), or None."""
        raw = getattr(self, "path", None)
        if not raw:
            return None
        p = Path(raw).expanduser()
        return p if p.is_absolute() else Path(project_dir) / p

    def sources(self, *, project_dir: Path) -> list[Source]:
        raise NotImplementedError

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raise NotImplementedError

    def to_bundle(self, raw: RawData) -> DataBundle:
        raise NotImplementedError

    def summary_frame(self, x: Any, y: Any) -> pd.DataFrame:
        raise NotImplementedError

    def expectations(self, *, scope: Scope, split: Split = "train") -> list:
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------

    def prepare(self, *, raw_dir: Path, project_dir: Path) -> dict[str, Any]:
        """Copy the raw files from the first available source into ``raw_dir``.

        A ``path`` set in the config is the only source tried: data the user named is never
        silently replaced by another copy.  Otherwise the system package comes first, then a
        download where one exists.  Files are copied into a temporary sibling directory and
        hashed, which then replaces ``raw_dir`` by a rename.  Files are not parsed here: a
        corrupt file is the validate stage's finding, with its report.  Returns
        ``{"dataset", "raw_dir", "source", "files", "tried"}``.
        """
        raw_dir = Path(raw_dir)
        project_dir = Path(project_dir)
        raw_dir.parent.mkdir(parents=True, exist_ok=True)
        tried: list[str] = []
        sources = self.sources(project_dir=project_dir)
        if self.configured_path(project_dir) is not None:
            sources = sources[:1]
        for desc, fetch in sources:
            tmp = Path(tempfile.mkdtemp(prefix=f".{raw_dir.name}.", suffix=".tmp", dir=raw_dir.parent))
            try:
                origins = fetch(tmp)
                hashes = write_hashes(tmp, origins)
                _swap_into_place(tmp, raw_dir)
            except Exception as exc:  # noqa: BLE001 - every failure means "try the next one"
                shutil.rmtree(tmp, ignore_errors=True)
                tried.append(f"{desc}: {exc}")
                log.info("dataset %s: source %s failed: %s", self.name, desc, exc)
                continue
            if tried:
                log.info("dataset %s: using %s after: %s", self.name, desc, "; ".join(tried))
            return {
                "dataset": self.name,
                "raw_dir": str(raw_dir),
                "source": desc,
                "files": hashes,
                "tried": tried,
            }
        lines = "\n".join(f"  - {t}" for t in tried) or "  (no sources)"
        raise DataError(
            f"no usable source for dataset {self.name!r}; tried:\n{lines}\n{self.install_hint}"
        )


# --------------------------------------------------------------------------------------
# tables (pima, tabular)
# --------------------------------------------------------------------------------------


def table_frame(x: Any, y: Any, *, label: str) -> pd.DataFrame:
    """What Great Expectations validates for a table: the feature frame with the label column
    appended (as objects, so a missing or foreign label stays visible); ``y`` None: the features."""
    frame = pd.DataFrame(x).reset_index(drop=True)
    if y is None:
        return frame
    return frame.assign(**{label: pd.Series(y).astype(object).reset_index(drop=True)})


def table_bundle(raw: RawData, *, name: str, features: Sequence[str], label: str,
                 classes: Sequence[str]) -> DataBundle:
    """Training tensors from a table's train and test frames: the ``features`` as float32,
    standardised with the training split's mean and standard deviation (both skipping missing
    cells; a missing cell becomes 0 before standardising, the code tabular sources use for a
    missing measurement), and ``label`` as the index of its string in ``classes``."""
    import torch

    if raw.frame_train is None or raw.frame_test is None:
        raise DataError(f"{name}: raw data has no frames")
    features = list(features)
    try:
        xtr = raw.frame_train.loc[:, features].to_numpy(dtype=np.float64)
        xte = raw.frame_test.loc[:, features].to_numpy(dtype=np.float64)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{name}: feature columns {features} are missing or not all numeric: {exc}") from exc
    mean, std = np.nanmean(xtr, axis=0), np.nanstd(xtr, axis=0)
    std[~(std > 0)] = 1.0
    mean = np.nan_to_num(mean)
    xtr, xte = np.nan_to_num(xtr, nan=0.0), np.nan_to_num(xte, nan=0.0)
    classes = tuple(str(c) for c in classes)
    codes = {c: i for i, c in enumerate(classes)}

    def labels(frame: pd.DataFrame) -> np.ndarray:
        values = frame[label].astype(str)
        bad = sorted(set(values) - set(codes))
        if bad:
            raise DataError(f"{name}: labels {bad[:10]} are not among the classes {list(classes)}")
        return values.map(codes).to_numpy(dtype=np.int64, copy=True)

    return DataBundle(
        name=name,
        x_train=torch.as_tensor((xtr - mean) / std, dtype=torch.float32),
        y_train=torch.as_tensor(labels(raw.frame_train)),
        x_test=torch.as_tensor((xte - mean) / std, dtype=torch.float32),
        y_test=torch.as_tensor(labels(raw.frame_test)),
        num_classes=len(classes),
        input_shape=(len(features),),
        class_names=classes,
        groups_train=None,
    )


# --------------------------------------------------------------------------------------
# image helpers shared by fashion_mnist and synthetic
# --------------------------------------------------------------------------------------

IMAGE_SUMMARY_COLUMNS = (
    "label", "height", "width", "n_pixels", "min", "max", "mean", "std", "nan_count", "inf_count",
)


def image_summary_frame(x: Any, y: Any) -> pd.DataFrame:
    """One row per image, computed vectorised; shape / NaN / Inf / range problems show up
    as column values (height, width, n_pixels, nan_count, inf_count, min, max)."""
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.ndim == 0:
        raise DataError("images must be an array [N, H, W], got a scalar")
    n = x.shape[0]
    if len(y) != n:
        raise DataError(f"{n} images but {len(y)} labels")
    if x.ndim == 3:
        height, width = x.shape[1], x.shape[2]
    else:  # not [N, H, W]: report -1 so the shape expectations fail
        height = width = -1
    flat = x.reshape(n, -1)
    n_pixels = flat.shape[1]
    if np.issubdtype(flat.dtype, np.integer) or flat.dtype == np.bool_:
        if n_pixels:
            mn = flat.min(axis=1).astype(np.float64)
            mx = flat.max(axis=1).astype(np.float64)
            mean = flat.mean(axis=1, dtype=np.float64)
            std = flat.std(axis=1, dtype=np.float64)
        else:
            mn = mx = mean = std = np.full(n, np.nan)
        nan_count = inf_count = np.zeros(n, dtype=np.int64)
    else:
        f = flat.astype(np.float64, copy=False) if flat.dtype.kind != "f" else flat
        nan_mask = np.isnan(f)
        inf_mask = np.isinf(f)
        nan_count = nan_mask.sum(axis=1)
        inf_count = inf_mask.sum(axis=1)
        finite = np.where(nan_mask | inf_mask, np.nan, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mn = np.nanmin(finite, axis=1).astype(np.float64) if n_pixels else np.full(n, np.nan)
            mx = np.nanmax(finite, axis=1).astype(np.float64) if n_pixels else np.full(n, np.nan)
            mean = np.nanmean(finite, axis=1, dtype=np.float64) if n_pixels else np.full(n, np.nan)
            std = np.nanstd(finite, axis=1, dtype=np.float64) if n_pixels else np.full(n, np.nan)
    return pd.DataFrame(
        {
            "label": y,
            "height": np.full(n, height, dtype=np.int64),
            "width": np.full(n, width, dtype=np.int64),
            "n_pixels": np.full(n, n_pixels, dtype=np.int64),
            "min": mn,
            "max": mx,
            "mean": mean,
            "std": std,
            "nan_count": np.asarray(nan_count, dtype=np.int64),
            "inf_count": np.asarray(inf_count, dtype=np.int64),
        },
        columns=list(IMAGE_SUMMARY_COLUMNS),
    )


def image_expectations(
    *, scope: Scope, height: int, width: int, num_classes: int, rows: int | None
) -> list:
    """Expectations on :func:`image_summary_frame` output."""
    import great_expectations as gx

    E = gx.expectations
    classes = list(range(num_classes))
    exps: list = [
        E.ExpectTableColumnsToMatchOrderedList(column_list=list(IMAGE_SUMMARY_COLUMNS)),
        E.ExpectColumnValuesToNotBeNull(column="label"),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
        E.ExpectColumnValuesToBeBetween(column="height", min_value=height, max_value=height),
        E.ExpectColumnValuesToBeBetween(column="width", min_value=width, max_value=width),
        E.ExpectColumnValuesToBeBetween(
            column="n_pixels", min_value=height * width, max_value=height * width
        ),
        E.ExpectColumnValuesToBeBetween(column="nan_count", min_value=0, max_value=0),
        E.ExpectColumnValuesToBeBetween(column="inf_count", min_value=0, max_value=0),
        E.ExpectColumnValuesToBeBetween(column="min", min_value=0, max_value=255),
        E.ExpectColumnValuesToBeBetween(column="max", min_value=0, max_value=255),
        E.ExpectColumnValuesToBeBetween(column="mean", min_value=0, max_value=255),
    ]
    if scope == "global":
        exps.append(E.ExpectTableRowCountToEqual(value=int(rows or 0)))
        exps.append(E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes))
    elif scope == "client":
        exps.append(E.ExpectTableRowCountToBeBetween(min_value=1))
    else:
        raise ValueError(f"scope must be 'global' or 'client', got {scope!r}")
    return exps


def normalise_images(x: np.ndarray, mean: float, std: float) -> "torch.Tensor":
    """uint8 [N,H,W] -> float32 [N,1,H,W], (x/255 - mean)/std."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    t.div_(255.0).sub_(mean).div_(std)
    return t.unsqueeze(1)


def check_image_raw(raw: RawData) -> None:
    for split in ("train", "test"):
        x, y = raw.xy(split)  # type: ignore[arg-type]
        if x is None or y is None:
            raise DataError(f"{raw.name}: {split} images/labels missing")
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(
                f"{raw.name}: {split} images must be [N,H,W] with N labels; "
                f"got {x.shape} and {len(y)} labels"
            )
