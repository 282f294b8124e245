"""Quality control of client updates: per-round validation against the cohort and anomaly scores
(the signals a reputation ledger consumes). Pure functions over the stacked updates."""

from fedops.quality.scores import AnomalyScores, anomaly_scores, default_byzantine, norm_outliers, robust_z

__all__ = ["AnomalyScores", "anomaly_scores", "default_byzantine", "norm_outliers", "robust_z"]
