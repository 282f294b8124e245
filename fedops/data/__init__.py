"""Datasets (plug-ins in ``DATASETS``) and their Great Expectations validation."""

from fedops.data.base import DATASETS, DataBundle, DataError, Dataset, RawData
from fedops.data import adult, compas, fashion_mnist, pima, synthetic, tabular  # noqa: F401  (registers the datasets)
from fedops.data.validation import (
    ValidationReport,
    failed_expectations,
    validate_clients,
    validate_dataset,
    validate_raw_dir,
    write_report,
)

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "Dataset",
    "RawData",
    "ValidationReport",
    "failed_expectations",
    "validate_clients",
    "validate_dataset",
    "validate_raw_dir",
    "write_report",
]
