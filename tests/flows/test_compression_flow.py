"""Codecs through the real training flow: exact bytes in MLflow, codec state across rounds,
RPN's compressed download, and codecs composed with secure aggregation and DP."""

import json
import math
from pathlib import Path

import pytest
import torch

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(prepared, **overrides):
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 2, "execution.max_workers": 1, **overrides})
    summary = run_federated_training(cfg, str(prepared))
    client = MlflowClient(summary["tracking_uri"])

    def metric(name):
        return [m.value for m in sorted(client.get_metric_history(summary["run_id"], name), key=lambda m: m.step)]

    def table(r):
        path = client.download_artifacts(summary["run_id"], f"clients/round_{r:04d}.json")
        return json.loads(Path(path).read_text())

    return summary, metric, table


def test_topk_error_feedback_bytes_are_the_payload_lengths(prepared):
    summary, metric, table = _run(prepared, **{"transport.codec": {"name": "topk", "fraction": 0.1, "error_feedback": True}})
    d = summary["num_params"]
    k = round(0.1 * d)
    per_client = 14 + min(math.ceil(d / 8), 4 * k) + 2 * k  # header + indices (bitmap) + float16 values
    for r, up in enumerate(metric("comm/bytes_up"), start=1):
        rows = [row for row in table(r) if row["status"] == "ok"]
        assert up == sum(row["bytes_up"] for row in rows) == per_client * len(rows)
    ratio = metric("comm/compression_ratio")[0]
    assert ratio == pytest.approx(4 * d / per_client)
    assert metric("comm/bytes_up_total")[-1] == sum(metric("comm/bytes_up"))
    assert metric("comm/bytes_down")[0] == 4 * d * 3  # float32 model to the 3 selected clients


def test_rpn_compresses_the_download_too(prepared):
    from fedops.compress.rpn import pooled_size
    from fedops.types import ParamLayout

    summary, metric, table = _run(prepared, **{"transport.codec": "rpn"})
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    model = cfg.model.build(input_shape=(1, 8, 8), num_classes=4, seed=0)
    m = pooled_size(ParamLayout.from_module(model))
    assert m < summary["num_params"]
    rows = [row for row in table(1) if row["status"] == "ok"]
    assert {row["bytes_up"] for row in rows} == {12 + 4 * m}
    assert {row["bytes_down"] for row in table(1)} == {12 + 4 * m}
    assert metric("comm/bytes_down")[0] == (12 + 4 * m) * len(table(1))


def test_rpn_with_unpooled_filters_through_the_flow(prepared):
    import numpy as np

    from fedops.compress.rpn import conv_filters, filters_size, unpooled_counts
    from fedops.types import ParamLayout

    summary, metric, table = _run(prepared, **{"transport.codec": {"name": "rpn", "unpooled_filters": 0.5}})
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    layout = ParamLayout.from_module(cfg.model.build(input_shape=(1, 8, 8), num_classes=4, seed=0))
    f = conv_filters(layout)
    mask = np.concatenate([np.arange(n) < m for n, m in zip((s.shape[0] for s in layout.slots if len(s.shape) == 4),
                                                            unpooled_counts(layout, 0.5))])
    assert mask.size == f
    per_client = 16 + (f + 7) // 8 + 4 * filters_size(layout, mask)  # the size depends on the counts only
    d = summary["num_params"]
    for r, up in enumerate(metric("comm/bytes_up"), start=1):
        rows = [row for row in table(r) if row["status"] == "ok"]
        assert rows and up == sum(row["bytes_up"] for row in rows) == per_client * len(rows)
    assert per_client < 4 * d
    assert {row["bytes_down"] for row in table(1)} == {4 * d}  # the model travels as float32


def _raw_rows(prepared, **overrides):
    """The round's client table before release (in process): what each client actually sent."""
    from fedops.paths import Paths
    from fedops.round import FederatedRun, SequentialExecutor, load_world

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 2, "execution.max_workers": 1, **overrides})
    run = FederatedRun(cfg, load_world(cfg, Paths.at(prepared)))
    run.run_round(1, SequentialExecutor(), evaluate=False)
    return run.last_outcome.rows, run.layout.size


RANDK_SECAGG_DP = {
    "transport.codec": {"name": "randk", "fraction": 0.5}, "server.fraction": 1.0, "server.selector": "poisson",
    "server.min_clients": 1, "privacy": {"mode": "central", "noise_multiplier": 0.3, "clip_norm": 1.0},
    "secagg": {"enabled": True},
}


def test_randk_under_secure_aggregation_with_dp(prepared):
    from mlflow.tracking import MlflowClient

    summary, metric, _ = _run(prepared, **RANDK_SECAGG_DP)
    assert len(metric("privacy/epsilon")) == 2
    assert not metric("secagg/survivors") and not metric("comm/bytes_up")  # participation is not released
    assert not MlflowClient(summary["tracking_uri"]).list_artifacts(summary["run_id"], "clients")
    rows, d = _raw_rows(prepared, **RANDK_SECAGG_DP)
    rows = [row for row in rows if row["status"] == "ok"]
    # each client masks only the round's shared k coordinates (+1 count coordinate), 32-bit fixed point
    assert rows and all(4 * (round(0.5 * d) + 1) < row["bytes_up"] < 4 * d for row in rows)
    state = torch.load(prepared / "models" / "global.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


QSGD_DP = {"transport.codec": {"name": "qsgd", "bits": 8}, "server.selector": "poisson", "server.min_clients": 1,
           "privacy": {"mode": "central", "noise_multiplier": 0.3, "clip_norm": 0.5, "randomness": "seeded"}}


def test_qsgd_with_client_level_dp_clips_before_encoding(prepared):
    summary, metric, _ = _run(prepared, **QSGD_DP)
    assert metric("privacy/epsilon")[-1] > 0
    rows, d = _raw_rows(prepared, **QSGD_DP)
    rows = [row for row in rows if row["status"] == "ok"]
    assert rows and all("dp_clipped" in row for row in rows)
    assert all(row["bytes_up"] < d + 64 for row in rows)  # ~1 byte per coordinate + header, norm, clip bit
