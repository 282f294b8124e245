"""Client-level DP through the real training flow: disclosure, epsilon per round, budget stop."""

import json
from pathlib import Path

import pytest

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_budget_stop_at_the_right_round_and_disclosure(prepared):
    from mlflow.tracking import MlflowClient
    from opacus.accountants import RDPAccountant

    from flows.training import run_federated_training

    sigma, q, target = 2.0, 3 / 6, 3.0  # RDP: 2.81 after 4 rounds, 3.12 after 5
    # independent reference: the first round whose epsilon would pass the target
    acc, expected_rounds = RDPAccountant(), 0
    while True:
        acc.step(noise_multiplier=sigma, sample_rate=q)
        if acc.get_epsilon(delta=1e-5) > target:
            break
        expected_rounds += 1
    assert 1 <= expected_rounds < 20
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 20, "server.selector": "poisson", "server.min_clients": 1,
        "privacy": {"mode": "central", "noise_multiplier": sigma, "target_epsilon": target, "clip_norm": 1.0,
                    "randomness": "seeded"},  # repeatable: an empty Poisson sample would fail a round
    })
    summary = run_federated_training(cfg, str(prepared))
    assert summary["rounds"] == expected_rounds
    assert "privacy budget" in summary["stopped"]
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    eps = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "privacy/epsilon"), key=lambda m: m.step)]
    assert len(eps) == expected_rounds and eps == sorted(eps) and eps[-1] <= target
    assert "privacy budget" in run.data.tags["fedops.stopped"]
    params = run.data.params
    assert params["privacy.disclosure.accountant"] == "rdp"
    assert params["privacy.disclosure.noise_multiplier"] == str(sigma)
    assert params["privacy.disclosure.sample_rate"] == str(q)
    assert params["privacy.disclosure.unit"].startswith("client-level")
    assert params["privacy.disclosure.opacus_version"]
    assert (prepared / "models" / "global.pt").is_file()  # the model is kept
    disclosure = json.loads(Path(client.download_artifacts(run.info.run_id, "privacy/disclosure.json")).read_text())
    assert disclosure["delta"] == 1e-5


def test_target_epsilon_alone_solves_sigma_and_spends_at_most_the_budget(prepared):
    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 4, "server.selector": "poisson",
        "privacy": {"mode": "central", "target_epsilon": 8.0, "clip_norm": 1.0, "adaptive_clipping": True,
                    "clip_count_stddev": 5.0, "randomness": "seeded"},
    })
    summary = run_federated_training(cfg, str(prepared))
    assert summary["rounds"] == 4 and summary["stopped"] is None
    assert 7.0 < summary["privacy_epsilon"] <= 8.0


def test_local_dp_sgd_tracks_each_clients_epsilon(prepared):
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 3, "server.fraction": 1.0, "execution.max_workers": 1,
        "privacy": {"mode": "local", "local_noise_multiplier": 1.0, "local_max_grad_norm": 1.0},
    })
    summary = run_federated_training(cfg, str(prepared))
    client = MlflowClient(summary["tracking_uri"])
    worst = [m.value for m in sorted(client.get_metric_history(summary["run_id"], "privacy/local_epsilon_max"),
                                     key=lambda m: m.step)]
    assert len(worst) == 3 and worst[0] > 0 and worst == sorted(worst) and worst[-1] > worst[0]
    table = json.loads(Path(client.download_artifacts(summary["run_id"], "clients/round_0003.json")).read_text())
    assert max(r["epsilon"] for r in table) == pytest.approx(worst[-1])


def test_local_dp_refuses_models_opacus_cannot_train(prepared):
    from fedops.config import ConfigError
    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "model": {"name": "torchvision", "arch": "resnet18"}, "server.rounds": 1,
        "privacy": {"mode": "local"},
    })
    with pytest.raises(ConfigError, match="BatchNorm"):
        run_federated_training(cfg, str(prepared))


def test_secure_aggregation_round_matches_plain_fedavg(prepared):
    """SecAgg+ with dropouts after masking: the server sees only the unmasked sum, and the model
    equals plain weighted FedAvg within the fixed-point bound."""
    import torch
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    base = {"server.rounds": 2, "server.fraction": 1.0, "execution.max_workers": 1}
    run_federated_training(load_config(ROOT / "configs" / "tiny.yaml", base), str(prepared))
    plain_model = torch.load(prepared / "models" / "global.pt", weights_only=True)["state_dict"]
    secure = run_federated_training(load_config(ROOT / "configs" / "tiny.yaml", {
        **base, "secagg": {"enabled": True, "scale": 2.0**20, "clip": 1.0}}), str(prepared))
    secure_model = torch.load(prepared / "models" / "global.pt", weights_only=True)["state_dict"]
    for name, value in plain_model.items():
        assert torch.allclose(value, secure_model[name], atol=1e-4), name
    client = MlflowClient(secure["tracking_uri"])
    up = client.get_metric_history(secure["run_id"], "comm/bytes_up")[0].value
    assert up > 6 * 4 * secure["num_params"]  # 32-bit masked vectors (+1 weight coordinate) + protocol messages

    # 6 clients: k = 5 neighbours, threshold 4. One dropout after sharing keys is recovered...
    dropped = run_federated_training(load_config(ROOT / "configs" / "tiny.yaml", {
        **base, "secagg": {"enabled": True, "dropout_fraction": 0.17, "dropout_stage": "share"}}), str(prepared))
    table = json.loads(Path(client.download_artifacts(dropped["run_id"], "clients/round_0001.json")).read_text())
    reasons = [r["reason"] for r in table if r["status"] == "dropped"]
    assert len(reasons) == 1 and reasons[0].startswith("secure aggregation")
    # ...two leave some secrets with 3 of 4 shares: a named abort, nothing unmasked, no model written
    from fedops.errors import RoundFailed

    before = (prepared / "models" / "global.pt").read_bytes()
    with pytest.raises(RoundFailed, match="secure aggregation aborted.*too few shares"):
        run_federated_training(load_config(ROOT / "configs" / "tiny.yaml", {
            **base, "secagg": {"enabled": True, "dropout_fraction": 0.34, "dropout_stage": "share"}}), str(prepared))
    assert (prepared / "models" / "global.pt").read_bytes() == before


def test_client_level_dp_with_secure_aggregation_in_one_run(prepared):
    """DP clipping on the clients + SecAgg+ masking with dropouts + the fixed-point quantisation it
    needs, in one flow run: epsilon per round, the disclosure names the composition."""
    import torch
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 3, "server.fraction": 1.0, "server.selector": "poisson", "server.min_clients": 1,
        "execution.max_workers": 1,
        "privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0, "adaptive_clipping": True,
                    "clip_count_stddev": 1.0},
        "secagg": {"enabled": True, "dropout_fraction": 0.17, "dropout_stage": "masked", "scale": 2.0**16},
    })
    summary = run_federated_training(cfg, str(prepared))
    assert summary["rounds"] == 3 and summary["privacy_epsilon"] > 0
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    eps = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "privacy/epsilon"), key=lambda m: m.step)]
    assert len(eps) == 3 and eps == sorted(eps)
    clips = [m.value for m in client.get_metric_history(run.info.run_id, "privacy/clip_norm")]
    assert len(set(clips)) > 1  # adaptive clipping moved C from the securely summed, noised count
    assert "before masking" in run.data.params["privacy.disclosure.composition"]
    # under client-level DP nothing about participation is released: no survivors count, no client table
    assert not client.get_metric_history(run.info.run_id, "secagg/survivors")
    assert not client.list_artifacts(run.info.run_id, "clients")
    state = torch.load(prepared / "models" / "global.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
