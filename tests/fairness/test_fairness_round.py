"""Fairness as steps of the round: degenerate cases equal FedAvg bit for bit, FairFed and global
reweighing under secure aggregation, the metrics each release mode lets out, the checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedops.fairness.checks import evaluate_checks, final_metrics
from fedops.simulation import simulate


@pytest.fixture
def run_with(adult_world_for, make_cfg):
    def go(**over):
        cfg = make_cfg(**over)
        return simulate(adult_world_for(cfg), cfg)

    return go


def test_fairfed_beta_zero_is_fedavg_bit_for_bit(run_with):
    fedavg = run_with(server__aggregator="fedavg")
    fairfed = run_with(server__aggregator={"name": "fairfed", "beta": 0.0})
    moved = run_with(server__aggregator={"name": "fairfed", "beta": 1.0})
    assert torch.equal(fairfed.params, fedavg.params)
    assert not torch.equal(moved.params, fedavg.params)  # beta > 0 does change the model


def test_qffl_q_zero_is_fedavg_bit_for_bit(run_with):
    fedavg = run_with(server__aggregator="fedavg")
    q0 = run_with(server__aggregator={"name": "qffl", "q": 0.0})
    q1 = run_with(server__aggregator={"name": "qffl", "q": 1.0})
    assert torch.equal(q0.params, fedavg.params)
    assert not torch.equal(q1.params, fedavg.params)
    assert q1.history[-1]["aggregate/qffl_step_factor"] < 1.0


def test_fairfed_under_secagg_equals_fairfed_within_the_quantisation_bound(run_with):
    over = {"server__aggregator": {"name": "fairfed", "beta": 1.0}, "server__rounds": 1}
    plain = run_with(**over)
    secure = run_with(**over, secagg__enabled=True, secagg__clip=1.0, secagg__scale=2.0 ** 20)
    # one round: both start from the same model and weights; the counts are integers (exact in the secure
    # sum), the mean gap and each w_k u_k are rounded to 1/scale, so the aggregate moves by at most
    # about K * 0.5 / scale per coordinate divided by the weights' sum (1 here, in units of n)
    bound = 5 * 0.5 / 2.0 ** 20 / 0.5 + 1e-6
    diff = (plain.params - secure.params).abs().max().item()
    assert diff <= bound, diff
    assert secure.history[-1]["fairfed/global_metric"] == pytest.approx(plain.history[-1]["fairfed/global_metric"])


def test_global_reweighing_pools_the_same_table_under_secagg(adult_world_for, make_cfg):
    from fedops.round import FederatedRun

    for secure in (False, True):
        cfg = make_cfg(client__reweighing="global", secagg__enabled=secure)
        run = FederatedRun(cfg, adult_world_for(cfg))
        table = run.world.runtime.reweighing_table
        if not secure:
            plain_table = table
    assert torch.equal(table, plain_table)
    rt = run.world.runtime
    g = np.asarray(rt.sensitive)[np.concatenate(rt.partition_indices)]
    y = rt.y_train[torch.as_tensor(np.concatenate(rt.partition_indices))].numpy()
    joint = np.array([[np.sum((g == a) & (y == c)) for c in (0, 1)] for a in (0, 1)], dtype=float)
    n = joint.sum()
    expected = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True) / n / joint
    np.testing.assert_allclose(table.numpy(), expected)


def test_local_reweighing_changes_training_only_when_on(run_with):
    a = run_with(server__rounds=1)
    b = run_with(server__rounds=1, client__reweighing="local")
    assert not torch.equal(a.params, b.params)


def test_fairbatch_keeps_each_clients_shares_across_rounds_and_a_restart(adult_world_for, make_cfg):
    from fedops.fairness.fairbatch import natural_lambda
    from fedops.round import FederatedRun, SequentialExecutor

    cfg = make_cfg(server__rounds=3, client__reweighing="fairbatch", client__fairbatch_alpha=0.1,
                   client__fairbatch_target="eqodds")
    run = FederatedRun(cfg, adult_world_for(cfg))
    rt = run.world.runtime
    run.run_round(1, SequentialExecutor(), evaluate=False)
    assert sorted(run.client_states) == list(range(5))
    for c, state in run.client_states.items():
        counts = rt.group_label_counts(c)
        start = natural_lambda(counts)
        lam = np.asarray(state["lam"])
        moved = np.abs(lam - start)
        # one step of 0.1 (up to the bounds 0 and 1) on one label where the client holds both groups
        assert (moved > 0).sum() == int((counts > 0).all(0).any())
        y = int(np.argmax(moved))
        assert moved[y] == pytest.approx(0.1) or lam[y] in (0.0, 1.0)
    saved = run.state_dict()
    run.run_round(2, SequentialExecutor(), evaluate=False)
    again = FederatedRun(cfg, adult_world_for(cfg))
    again.load_state_dict(saved)
    again.run_round(2, SequentialExecutor(), evaluate=False)
    assert again.client_states == run.client_states and torch.equal(again.params, run.params)
    plain = make_cfg(server__rounds=1)
    off = FederatedRun(plain, adult_world_for(plain))
    off.run_round(1, SequentialExecutor(), evaluate=False)
    assert off.client_states == {}


def test_global_fairbatch_is_the_same_under_secagg_and_moves_the_population_shares(adult_world_for, make_cfg):
    from fedops.round import FederatedRun, SequentialExecutor

    lams = []
    for secure in (False, True):
        cfg = make_cfg(server__rounds=2, client__reweighing="fairbatch_global", client__fairbatch_alpha=0.05,
                       secagg__enabled=secure, secagg__clip=1.0, secagg__scale=2.0 ** 20)
        run = FederatedRun(cfg, adult_world_for(cfg))
        start = run.fairbatch.lam.copy()
        np.testing.assert_allclose(run.fairbatch.table(), np.ones((2, 2)))  # natural shares: weight 1
        for r in (1, 2):
            record = run.run_round(r, SequentialExecutor(), evaluate=False)
            assert np.abs(run.fairbatch.lam - start).max() == pytest.approx(0.05, abs=1e-12)  # one step a round
            start = run.fairbatch.lam.copy()
        assert "fairbatch/lambda_y1" in record.metrics  # released under secure aggregation too
        lams.append(run.fairbatch.lam)
        assert run.state_dict()["fairbatch"] == {"lam": [float(v) for v in run.fairbatch.lam]}
    # loss sums cross as integers (rint(sum * 1000)): the secure sum is exact, the shares identical
    assert np.array_equal(lams[0], lams[1])
    again = FederatedRun(cfg, adult_world_for(cfg))
    again.load_state_dict(run.state_dict())
    assert np.array_equal(again.fairbatch.lam, run.fairbatch.lam)  # the population's shares resume


def test_a_secure_sum_refuses_counts_it_cannot_carry_exactly(make_cfg):
    from fedops.round.transport import transport_for

    summer = transport_for(make_cfg(secagg__enabled=True)).summer(1)
    assert summer({0: np.array([5.0, 2.0 ** 20]), 1: np.array([1.0, 0.0])}, "counts").tolist() == [6.0, 2.0 ** 20]
    with pytest.raises(ValueError, match="a count of 1.04858e\\+06 is above 1.04858e\\+06"):
        summer({0: np.array([2.0 ** 20 + 1]), 1: np.array([1.0])}, "counts")


def test_fairness_metrics_every_evaluated_round_and_release(run_with):
    full = run_with()
    for row in full.history:
        for key in ("fairness/client_acc_std", "fairness/client_acc_worst10", "fairness/client_acc_best10",
                    "fairness/client_acc_min", "fairness/jain_index", "fairness/dpd", "fairness/eqodds",
                    "fairness/eopp", "fairness/spd", "fairness/eod", "fairness/client_dpd"):
            assert key in row, key
    secure = run_with(secagg__enabled=True)
    last = secure.history[-1]
    assert "fairness/dpd" in last and "fairness/eod" in last  # the server's own test set
    assert not any(k.startswith("fairness/client") or k == "fairness/jain_index" for k in last)


def test_client_accuracy_vector_is_released_only_in_full(adult_world_for, make_cfg):
    from fedops.round import FederatedRun, SequentialExecutor

    cfg = make_cfg(server__rounds=1)
    run = FederatedRun(cfg, adult_world_for(cfg))
    record = run.run_round(1, SequentialExecutor(), evaluate=True)
    assert record.client_accuracy is not None and len(record.client_accuracy) == 5
    assert np.mean(record.client_accuracy) == pytest.approx(record.metrics["fairness/client_acc_mean"])
    cfg = make_cfg(server__rounds=1, secagg__enabled=True)
    run = FederatedRun(cfg, adult_world_for(cfg))
    assert run.run_round(1, SequentialExecutor(), evaluate=True).client_accuracy is None


def test_checks_by_hand():
    metrics = {"fairness/dpd": 0.25, "fairness/eod": -0.2, "fairness/client_acc_worst10": 0.6}
    res = {r.check: r for r in evaluate_checks({"max_dpd": 0.1, "max_abs_eod": 0.3, "min_client_acc_worst10": 0.7,
                                                 "min_jain_index": 0.9}, metrics)}
    assert not res["max_dpd"].passed and res["max_dpd"].by == pytest.approx(0.15)
    assert res["max_abs_eod"].passed
    assert not res["min_client_acc_worst10"].passed and res["min_client_acc_worst10"].by == pytest.approx(0.1)
    assert "not measured" in res["min_jain_index"].describe() and not res["min_jain_index"].passed
    assert "fairness/dpd = 0.2500 > 0.1 (by 0.1500)" in res["max_dpd"].describe()
    assert final_metrics([{"test/accuracy": 0.5, "x": 1}, {"round": 2}]) == {"test/accuracy": 0.5, "x": 1}
