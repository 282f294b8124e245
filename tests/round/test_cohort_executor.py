"""The cohort executor on the round's executor interface: each client's update equals the one
the per-client path computes (within 1e-5, float32 and float64, FedAvg and FedProx, unequal
client sizes, any chunk size); the final model's hash does not depend on the chunk size or on
how clients are grouped into tasks; dropouts, poisoned clients and refused combinations behave
as on the per-client path; ``auto`` follows its probe."""

import numpy as np
import pytest
import torch

from fedops.client.runtime import ClientDropped, ClientRuntime
from fedops.config import ConfigError, parse_config
from fedops.round import CohortExecutor, FederatedRun, SequentialExecutor, World, local_executor, run_training
from fedops.round.executor import CohortChoice, Job, run_group

SIZES = (7, 31, 12, 25, 3, 18, 40, 9)
BASE = {"data": {"name": "synthetic", "num_train": sum(SIZES), "num_test": 40, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": len(SIZES)}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "client": {"epochs": 2, "batch_size": 5, "lr": 0.2}, "server": {"rounds": 3, "fraction": 0.75},
        "execution": {"max_workers": 2, "device": "cpu", "retries": 0}}


def _cfg(model=None, **over):
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    if model is not None:
        cfg["model"] = model
    for key, value in over.items():
        section, _, name = key.partition(".")
        cfg.setdefault(section, {})[name] = value
    return parse_config(cfg)


def _world(cfg, dtype=torch.float32):
    from fedops.evaluation import TestSet

    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    bounds = np.cumsum((0,) + SIZES)
    runtime = ClientRuntime(config=cfg, x_train=torch.randn(n, 1, 8, 8, generator=g).to(dtype),
                            y_train=torch.randint(0, 4, (n,), generator=g),
                            partition_indices=[np.arange(bounds[i], bounds[i + 1]) for i in range(len(SIZES))],
                            client_meta=[], input_shape=(1, 8, 8), num_classes=4)
    return World(runtime=runtime, testset=TestSet(torch.randn(40, 1, 8, 8, generator=g).to(dtype),
                                                  torch.randint(0, 4, (40,), generator=g), num_classes=4))


DP = {"execution.executor": "cohort", "privacy.mode": "local", "privacy.local_noise_multiplier": 1.1,
      "privacy.local_max_grad_norm": 0.5, "privacy.randomness": "seeded"}
"""Sample-level DP-SGD in every client, research-mode randomness so that both paths draw the same
Poisson batches and noise."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("hp", [{}, {"client.prox_mu": 0.5}, {"client.momentum": 0.9, "client.weight_decay": 1e-3}, DP],
                         ids=["fedavg", "fedprox", "momentum-wd", "local-dp-sgd"])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_each_clients_update_equals_the_per_client_path(dtype, hp, chunk):
    """Under local DP the per-client path is Opacus; its steps and sample rate come back too."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the model's parameters in this dtype
    try:
        runtime = _world(_cfg(**{"execution.executor": "cohort", **hp}), dtype).runtime
        params = runtime.layout.flatten(runtime.new_model(seed=1))
        clients = list(range(len(SIZES)))
        got = runtime.train_cohort(round_idx=2, client_ids=clients, global_params=params, chunk_size=chunk)
        for cid in clients:
            want = runtime.train(round_idx=2, client_id=cid, global_params=params)
            update = got[cid]
            assert update.metrics["cohort"] == 1.0 and update.num_samples == SIZES[cid]
            assert set(update.metrics) == set(want.metrics) | {"cohort"}
            err = float((update.delta - want.delta).abs().max())
            assert err <= 1e-5 and float(want.delta.abs().max()) > 1e-3, (cid, err)
            for key, value in want.metrics.items():  # steps and train_loss, or steps and sample_rate
                assert update.metrics[key] == pytest.approx(value, abs=1e-5), key
    finally:
        torch.set_default_dtype(before)


def test_a_local_dp_run_does_not_depend_on_chunk_size_and_matches_the_per_client_run():
    cfg = _cfg(**DP)
    digests = {chunk: _digest(cfg, CohortExecutor(chunk_size=chunk, workers=2)) for chunk in (1, 3, None)}
    assert len(set(digests.values())) == 1, digests
    a, b = FederatedRun(cfg, _world(cfg)), FederatedRun(cfg, _world(cfg))
    run_training(a, local_executor(cfg.execution))
    run_training(b, SequentialExecutor())
    assert float((a.params - b.params).abs().max()) < 1e-4
    assert a.history[-1]["privacy/local_epsilon_max"] == b.history[-1]["privacy/local_epsilon_max"] > 0


def _digest(cfg, executor, rounds=3):
    world = _world(cfg)
    return run_training(FederatedRun(cfg, world), executor, schedule=lambda r: r == rounds).digest


def test_the_final_model_does_not_depend_on_chunk_size_or_grouping():
    cfg = _cfg(**{"execution.executor": "cohort"})
    digests = {(chunk, group): _digest(cfg, CohortExecutor(chunk_size=chunk, workers=2, group_size=lambda n, g=group: g))
               for chunk, group in [(1, 6), (2, 6), (64, 6), (64, 1), (3, 2), (None, 6)]}
    assert len(set(digests.values())) == 1, digests
    # and the round through local_executor (what simulate and the benchmarks use) is the same run
    assert _digest(cfg, local_executor(cfg.execution)) == next(iter(digests.values()))


def test_cohort_and_per_client_runs_agree_to_rounding():
    cfg = _cfg(**{"execution.executor": "cohort"})
    a, b = FederatedRun(cfg, _world(cfg)), FederatedRun(cfg, _world(cfg))
    run_training(a, local_executor(cfg.execution))
    run_training(b, SequentialExecutor())
    assert float((a.params - b.params).abs().max()) < 1e-4
    assert a.history[-1]["clients/aggregated"] == b.history[-1]["clients/aggregated"]
    assert a.history[-1]["test/accuracy"] == pytest.approx(b.history[-1]["test/accuracy"], abs=0.03)


def test_dropouts_fail_alone_and_poisoned_clients_train_on_their_own():
    cfg = _cfg(**{"execution.executor": "cohort", "simulation.dropout_prob": 0.4,
                  "simulation.attack": "label_flip", "simulation.malicious_fraction": 0.25})
    runtime = _world(cfg).runtime
    params = runtime.layout.flatten(runtime.new_model(seed=1))
    clients = list(range(len(SIZES)))
    got = runtime.train_cohort(round_idx=1, client_ids=clients, global_params=params)
    dropped = [c for c in clients if isinstance(got[c], ClientDropped)]
    assert dropped and len(dropped) < len(clients)
    for c in dropped:
        with pytest.raises(ClientDropped, match=f"client {c} dropped out in round 1"):
            runtime.train(round_idx=1, client_id=c, global_params=params)
    poisoned = [c for c in clients if c in runtime.malicious and c not in dropped]
    assert poisoned
    for c in poisoned:  # the per-client path trained it: the same bytes
        assert got[c].metrics["cohort"] == 0.0
        assert torch.equal(got[c].delta, runtime.train(round_idx=1, client_id=c, global_params=params).delta)
    assert all(got[c].metrics["cohort"] == 1.0 for c in clients if c not in dropped and c not in poisoned)
    # through the executor, the dropouts are the round's failures with the reason
    from fedops.round.jobs import TRAIN

    out = CohortExecutor(workers=1).map(TRAIN, clients, round_idx=1, shared={"runtime": runtime, "params": params})
    assert sorted(out.failures) == dropped
    assert all("ClientDropped" in why for why in out.failures.values())


def test_refused_combinations_name_the_value():
    with pytest.raises(ConfigError, match="execution.executor = 'cohort': server.aggregator = 'qffl'"):
        _cfg(**{"execution.executor": "cohort", "server.aggregator": {"name": "qffl", "q": 1.0}})
    with pytest.raises(ConfigError, match="clients_per_task = 4 needs Prefect tasks"):
        _cfg(**{"execution.executor": "sequential", "execution.clients_per_task": 4})
    with pytest.raises(ConfigError, match="execution.executor"):
        _cfg(**{"execution.executor": "vmap"})
    # auto accepts what the cohort path cannot do: those clients train one at a time
    cfg = _cfg(model={"name": "mlp", "hidden": [8], "dropout": 0.5}, **{"execution.executor": "auto"})
    assert "dropout" in _world(cfg).runtime.cohort_refusal
    with pytest.raises(ConfigError, match="execution.executor = 'cohort' cannot vectorise this run: model 'mlp'.*dropout"):
        _world(_cfg(model={"name": "mlp", "hidden": [8], "dropout": 0.5}, **{"execution.executor": "cohort"}))


def _job(times):
    def fn(item, *, round_idx, **_):
        return ("one", item)

    def batch_fn(items, *, round_idx, chunk_size, **_):
        return {i: ("cohort", i) for i in items}

    def probe_fn(items, *, round_idx, **_):
        times["calls"] += 1
        return {"cohort_s": times["cohort_s"], "sequential_s": times["sequential_s"], "clients": len(items)}

    return Job(name="train-client", item="client", fn=fn, batch_fn=batch_fn, probe_fn=probe_fn)


@pytest.mark.parametrize("cohort_s, sequential_s, path", [(0.1, 0.3, "cohort"), (0.3, 0.1, "one")])
def test_auto_takes_the_path_its_probe_found_faster_and_probes_once(cohort_s, sequential_s, path):
    times = {"cohort_s": cohort_s, "sequential_s": sequential_s, "calls": 0}
    job = _job(times)
    ex = CohortExecutor(mode="auto", workers=2)
    for r in (1, 2):
        out = ex.map(job, [0, 1, 2, 3, 4], round_idx=r, shared={})
        assert out.results == {i: (path, i) for i in range(5)}
    assert times["calls"] == 1
    assert ex.choice.describe().startswith(f"auto: {'cohort' if path == 'cohort' else 'one client at a time'}")


def test_a_failed_batch_is_retried_client_by_client():
    calls = []

    def fn(item, *, round_idx):
        calls.append(item)
        if item == 2:
            raise RuntimeError("client 2 is broken")
        return item

    def batch_fn(items, *, round_idx, chunk_size):
        raise MemoryError("the cohort did not fit")

    job = Job(name="train-client", item="client", fn=fn, batch_fn=batch_fn)
    out = run_group(job, [1, 2, 3], round_idx=1, shared={}, retries=2, batch=True, chunk_size=8)
    assert out.results == {1: 1, 3: 3}
    assert out.failures == {2: "RuntimeError: client 2 is broken"}
    assert calls.count(2) == 2 and calls.count(1) == 1  # retries: 2 attempts after the batch's
    assert CohortChoice("off").batch(job, [1], round_idx=1, shared={}) is False


def test_the_probe_times_both_paths_on_real_clients_once_per_model_and_layout():
    from fedops.client import runtime as rt_module

    runtime = _world(_cfg(**{"execution.executor": "auto"})).runtime
    params = runtime.layout.flatten(runtime.new_model(seed=1))
    rt_module._PROBES.clear()
    first = runtime.probe_cohort(global_params=params, client_ids=list(range(len(SIZES))), clients=3)
    assert first["cohort_s"] > 0 and first["sequential_s"] > 0 and first["clients"] == 6.0
    assert runtime.probe_cohort(global_params=params, client_ids=[0, 1], clients=3) is first  # cached
    refused = _world(_cfg(model={"name": "mlp", "hidden": [8], "dropout": 0.5},
                          **{"execution.executor": "auto"})).runtime
    probe = refused.probe_cohort(global_params=refused.layout.flatten(refused.new_model(seed=1)), client_ids=[0, 1])
    assert probe["cohort_s"] == float("inf")  # never chosen, nothing timed
    dp = _world(_cfg(**{**DP, "execution.executor": "auto"})).runtime  # Opacus one at a time against the DP cohort
    timed = dp.probe_cohort(global_params=params, client_ids=list(range(len(SIZES))), clients=3)
    assert 0 < timed["cohort_s"] < float("inf") and timed["sequential_s"] > 0 and timed is not first


def test_the_runtimes_chunk_is_the_configured_one_or_what_the_memory_budget_holds():
    from fedops.client.cohort import client_bytes

    cpu = torch.device("cpu")
    assert _world(_cfg(**{"execution.cohort_chunk": 5})).runtime.cohort_chunk(cpu) == 5
    rt = _world(_cfg()).runtime
    one = client_bytes(rt.new_model(seed=0), x=rt.x_train[:5], y=rt.y_train[:5])  # a minibatch of batch_size rows
    for clients in (1, 3, 7):
        budget_mb = clients * one / 2**20
        assert _world(_cfg(**{"execution.cohort_memory_mb": budget_mb})).runtime.cohort_chunk(cpu) == clients
    with pytest.raises(ConfigError, match="cohort_memory_mb"):
        _cfg(**{"execution.cohort_memory_mb": 0})
