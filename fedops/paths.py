"""Where each pipeline stage reads and writes, relative to a work directory (the repo for DVC)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Paths":
        return cls(Path(root).resolve())

    def raw_dir(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    @property
    def manifest(self) -> Path:
        return self.root / "data" / "partitions" / "manifest.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    @property
    def client_validation_report(self) -> Path:
        return self.reports / "client_validation.json"

    @property
    def heatmap(self) -> Path:
        return self.reports / "partition_heatmap.png"

    @property
    def train_summary(self) -> Path:
        return self.reports / "train.json"

    @property
    def rounds_csv(self) -> Path:
        return self.reports / "rounds.csv"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def baseline(self) -> Path:
        return self.reports / "baseline.json"

    @property
    def fairness_report(self) -> Path:
        return self.reports / "fairness.json"

    @property
    def fairness_plot(self) -> Path:
        return self.reports / "fairness.png"

    @property
    def model(self) -> Path:
        return self.root / "models" / "global.pt"

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints, one directory per run (config and partition): not a DVC output."""
        return self.root / "checkpoints" / "train"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"
