"""What a run releases under secure aggregation and client-level DP: the round computes per-client
norms, losses and exact counts; none of them reaches MLflow (metrics, params, tags, artifacts) or
the work directory's reports. Privacy randomness is the OS CSPRNG unless the research mode is on."""

import json
import math
import re
from pathlib import Path

import pytest

from fedops.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SECAGG = {"secagg": {"enabled": True, "scale": 2.0**20}, "server.fraction": 1.0}
DP = {"server.selector": "poisson", "server.min_clients": 1,
      "privacy": {"mode": "central", "noise_multiplier": 0.7, "clip_norm": 0.5, "adaptive_clipping": True,
                  "clip_count_stddev": 1.0, "randomness": "seeded"}}
DP_SECAGG = {**DP, "server.fraction": 1.0, "secagg": {"enabled": True, "scale": 2.0**16}}

PER_CLIENT = ("update_norm", "train_loss", "num_samples", "dp_clipped", "secagg_clipped_coordinates",
              "norm_z", "cosine_to_aggregate", "krum_score", "flagged", "steps")


def _raw(cfg, work):
    """Every round's numbers before release, from the same seeded run in process."""
    from fedops.paths import Paths
    from fedops.round import FederatedRun, SequentialExecutor, load_world

    run = FederatedRun(cfg, load_world(cfg, Paths.at(work)))
    outcomes = []
    for r in range(1, cfg.server.rounds + 1):
        run.run_round(r, SequentialExecutor(), evaluate=True)
        outcomes.append(run.last_outcome)
    return run, outcomes


def _forbidden(outcomes) -> set[float]:
    """Per-client values derived from updates, and exact aggregates of them (non-trivial floats)."""
    values = set()
    for o in outcomes:
        ok = [row for row in o.rows if row["status"] == "ok"]
        for row in o.rows:
            values.update(float(row[k]) for k in ("update_norm", "train_loss", "norm_z", "cosine_to_aggregate",
                                                   "krum_score") if row.get(k) is not None)
        norms = [row["update_norm"] for row in ok]
        if norms:
            values.add(sum(norms) / len(norms))  # the exact mean update norm
        values.add(o.metrics["train/loss"])
    return {v for v in values if math.isfinite(v) and abs(v - round(v, 3)) > 1e-9}


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:[eE][-+]?\d+)?", text)]


def _released(summary: dict, work: Path) -> tuple[dict, list[float], list[str]]:
    """Every metric value, and every number in params, tags and artifacts, of the tracked run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    metrics = {k: [m.value for m in client.get_metric_history(summary["run_id"], k)] for k in run.data.metrics}
    numbers = [v for vs in metrics.values() for v in vs]
    for value in [*run.data.params.values(), *run.data.tags.values()]:
        numbers += _numbers(value)
    paths, stack = [], [None]
    while stack:
        for a in client.list_artifacts(summary["run_id"], stack.pop()):
            if a.is_dir:
                stack.append(a.path)
            else:
                paths.append(a.path)
    for path in paths:
        if path.endswith((".json", ".csv", ".txt", ".yaml", ".MLmodel")) or path.endswith("MLmodel"):
            numbers += _numbers(Path(client.download_artifacts(summary["run_id"], path)).read_text())
    for report in ("reports/train.json", "reports/rounds.csv"):
        numbers += _numbers((work / report).read_text())
    return metrics, numbers, paths


@pytest.mark.parametrize("name, overrides, policy", [
    ("secagg", SECAGG, "secure"), ("central-dp", DP, "central_dp"), ("central-dp-secagg", DP_SECAGG, "central_dp")])
def test_no_per_client_value_derived_from_an_update_is_released(name, overrides, policy, prepared):
    from fedops.round.release import PARTICIPATION_FIELDS, ReleasePolicy
    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 3, **overrides})
    run, outcomes = _raw(cfg, prepared)
    assert run.release.mode == policy
    forbidden = _forbidden(outcomes)
    assert len(forbidden) >= 3 * 2  # the round did compute per-client values
    summary = run_federated_training(cfg, str(prepared))
    from fedops.round import params_digest

    assert summary["model_params_sha256"] == params_digest(outcomes[-1].params)  # the same (seeded) run
    metrics, numbers, paths = _released(summary, prepared)
    leaked = [v for v in numbers if any(math.isclose(v, f, rel_tol=1e-9, abs_tol=0.0) for f in forbidden)]
    assert not leaked, leaked[:5]
    assert not {k for k in metrics if not ReleasePolicy(policy).allows_metric(k)}
    assert "train/loss" not in metrics
    tables = [p for p in paths if p.startswith("clients/")]
    if policy == "central_dp":  # nothing about participation, not even a count
        assert not tables and not {k for k in metrics if k.startswith(("clients/", "comm/"))}
        assert summary["comm_bytes_up_total"] is None
        assert "privacy/epsilon" in metrics and "privacy/fraction_clipped" not in metrics
    else:  # participation, bytes and timing only
        assert len(tables) == 3
        from mlflow.tracking import MlflowClient

        client = MlflowClient(summary["tracking_uri"])
        for path in tables:
            rows = json.loads(Path(client.download_artifacts(summary["run_id"], path)).read_text())
            assert rows and all(set(row) <= PARTICIPATION_FIELDS for row in rows)
            assert not any(k in row for row in rows for k in PER_CLIENT)
    assert not any(p.startswith("data/") and Path(p).name in ("manifest.json", "client_validation.json",
                                                               "partition_heatmap.png") for p in paths)


def test_dp_noise_differs_between_runs_unless_the_research_mode_is_on(prepared):
    from mlflow.tracking import MlflowClient

    from fedops.paths import Paths
    from fedops.round import load_world
    from fedops.simulation import simulate
    from flows.training import run_federated_training

    # q = 0.9: with OS randomness the Poisson sample differs per run, and an empty one (q = 0.5:
    # 1 in 64 rounds of 6 clients) fails the round under server.min_clients = 1
    os_random = {**DP, "server.fraction": 0.9, "privacy": {**DP["privacy"], "randomness": "os"}}
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 2, **os_random})
    world = load_world(cfg, Paths.at(prepared))
    first, second = simulate(world, cfg), simulate(world, cfg)
    assert first.digest != second.digest  # same seed, same config: different noise (and sampling)
    seeded = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 2, **DP})
    assert simulate(world, seeded).digest == simulate(world, seeded).digest
    summary = run_federated_training(seeded, str(prepared))
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    assert run.data.tags["fedops.privacy_randomness"] == "seeded"
    assert run.data.params["privacy.disclosure.randomness"] == "seeded (research mode)"


def test_privacy_refusals_name_the_reason():
    dp = {"server": {"selector": "poisson"}, "privacy": {"mode": "central", "noise_multiplier": 1.0}}
    with pytest.raises(ConfigError, match=r"quality.norm_multiple = 3: .*sensitivity") as exc:
        parse_config({**dp, "quality": {"norm_multiple": 3}})
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="quality.anomaly_scores"):
        parse_config({**dp, "quality": {"anomaly_scores": True}})
    with pytest.raises(ConfigError, match="'median' decides each client's influence"):
        parse_config({**dp, "server": {"selector": "poisson", "aggregator": "median"}})
    with pytest.raises(ConfigError, match="randomness = 'seeded'.*privacy.mode = 'none'"):
        parse_config({"privacy": {"randomness": "seeded"}})
    with pytest.raises(ConfigError, match="norm_bounded.*on each client"):
        parse_config({"secagg": {"enabled": True}, "server": {"aggregator": {"name": "norm_bounded", "max_norm": 1}}})
    assert parse_config(dp).quality.scores_on(secagg=False, central_dp=True) is False
