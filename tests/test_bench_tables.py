"""The attack-table and CrowdFL benchmark summaries: the per-cell statistics, the 20% checks and
the README blocks they write (hand-made results, no training)."""

import pytest

from fedops_benchmarks import attack_table as at
from fedops_benchmarks import crowdfl


def _results():
    out = []
    for seed, shift in zip(at.SEEDS, (0.0, 0.01, -0.01)):
        for ri, (rlabel, _) in enumerate(at.RULES):
            out.append({"table": "main", "seed": seed, "attack_label": "none", "fraction": 0.0, "rule_label": rlabel,
                        "accuracy": 0.8 + shift - 0.001 * ri})
            for ai, (alabel, _) in enumerate(at.ATTACKS):
                for f in at.FRACTIONS:
                    acc = (0.2 if rlabel == "FedAvg" else 0.7 + 0.01 * ri) + shift - f / 10
                    out.append({"table": "main", "seed": seed, "attack_label": alabel, "fraction": f,
                                "rule_label": rlabel, "accuracy": acc})
        for rlabel, _ in at.BACKDOOR_RULES:
            for f in (0.0, *at.BACKDOOR_FRACTIONS):
                out.append({"table": "backdoor", "seed": seed, "fraction": f, "rule_label": rlabel,
                            "accuracy": 0.75 + shift, "backdoor_accuracy": 0.05 + f})
    return out


def test_summary_statistics_and_checks(tmp_path):
    s = at.summarise(_results())
    clean = s["cells"]["none|0.0|FedAvg"]
    assert clean["mean"] == pytest.approx(0.8) and clean["spread"] == pytest.approx(0.02) and clean["n"] == 3
    best = at.RULES[-1][0]  # the largest rule index has the highest accuracy in the made-up results
    for alabel, _ in at.ATTACKS:
        c = s["checks_at_20pct"][alabel]
        assert c["best_rule"] == best and c["best"] == pytest.approx(0.7 + 0.01 * (len(at.RULES) - 1) - 0.02)
        assert c["gap_pts"] == pytest.approx(100 * (0.8 - c["best"])) and c["fedavg"] == pytest.approx(0.18)
    bd = s["backdoor"][f"FedAvg|{at.BACKDOOR_FRACTIONS[0]}"]
    assert bd["backdoor_accuracy"]["mean"] == pytest.approx(0.05 + at.BACKDOOR_FRACTIONS[0])
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{at.BEGIN}\nold\n{at.END}\noutro\n")
    at.write_readme({**s, "seconds": 600.0, "processes": 2, "rounds": 25}, readme)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.rstrip().endswith("outro")
    assert "| sign flip | 20% | 0.180 ± 0.020 |" in text and "in 10.0 min on 2 CPU processes" in text


def test_crowdfl_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("x\n")
    rows = {k: {"mean": m, "spread": 0.01, "runs": [m]} for k, m in [
        ("clean", 0.78), ("without bad client", 0.77), ("bad client (50% missing), keep", 0.70),
        ("bad client (50% missing), exclude", 0.77)]}
    crowdfl.write_readme({"rows": rows, "bad_client_validation": {"failures": ["expect_x[glucose]"]},
                          "seeds": [0]}, readme)
    text = readme.read_text()
    assert "| bad client (50% missing), keep | 0.7000 | 0.0100 | -7.00 pts |" in text
    assert "| bad client (50% missing), exclude | 0.7700 | 0.0100 | +0.00 pts |" in text
    assert "expect_x[glucose]" in text


def test_compression_summary_compares_each_seed_with_its_own_float32_run(tmp_path):
    from fedops_benchmarks import compression_table as ct

    def row(model, label, name, seed, acc, up):
        return {"model": model, "label": label, "codec": {"name": name}, "seed": seed, "rounds": 40,
                "num_params": 10, "accuracy": acc, "up_mb": up, "down_mb": 8.0}

    rows = [row("small_cnn", "none (float32)", "none", 0, 0.80, 8.0), row("small_cnn", "RPN", "rpn", 0, 0.77, 7.9)]
    for seed, base in zip((0, 1, 2), (0.80, 0.84, 0.82)):
        rows += [row("mnist_cnn", "none (float32)", "none", seed, base, 8.0),
                 row("mnist_cnn", "RPN", "rpn", seed, base - 0.02 + 0.01 * seed, 4.0)]
    s = ct.summarise(rows)
    small, paper = s["small_cnn"], s["mnist_cnn"]
    assert small[1]["vs_none"] == pytest.approx(-3.0) and small[1]["seeds"] == 1
    rpn = paper[1]
    assert rpn["seeds"] == 3 and rpn["accuracy"] == pytest.approx((0.78 + 0.83 + 0.82) / 3)
    # per seed: -2, -1, 0 points, although the seeds' float32 runs differ by 4 points
    assert rpn["vs_none"] == pytest.approx(-1.0) and (rpn["vs_none_min"], rpn["vs_none_max"]) == pytest.approx((-2.0, 0.0))
    assert rpn["up_ratio"] == pytest.approx(2.0) and rpn["spread"] == pytest.approx(0.05)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{ct.BEGIN}\nold\n{ct.END}\nb\n")
    ct.write_readme(s, minutes=1.5, readme=readme)
    text = readme.read_text()
    assert "| RPN | 0.7700 | -3.00 pts | 7.90 | 1.01x | 8.00 |" in text
    assert "| RPN | 0.8100 ± 0.0500 | -1.00 pts [-2.00, +0.00] | 4.00 | 2.00x | 8.00 |" in text
    assert "mean ± spread over 3 seeds" in text and "1.5 min on 2 CPU processes" in text and "old" not in text


def test_fairness_targets_and_readme_blocks(tmp_path):
    from fedops_benchmarks import fairness_table as ft

    rows = []
    for seed in ft.SEEDS:
        for label, _, _ in ft.METHODS:
            eod = {"FedAvg": 0.20, "FairFed β=1 + local reweighing": 0.10 + 0.12 * (seed == 2)}.get(label, 0.15)
            rows.append({"dataset": "adult", "alpha": 0.1, "model_name": "MLP", "method": label, "seed": seed,
                         "accuracy": 0.85 - 0.01 * (label != "FedAvg"), "eod": eod, "spd": 0.1, "client_std": 0.05,
                         "worst10": 0.8, "client_mean": 0.84})
        for label, _, _ in ft.qffl_methods(2.0):
            rows.append({"dataset": "fmnist", "method": label, "seed": seed, "accuracy": 0.8, "eod": float("nan"),
                         "spd": float("nan"), "client_std": 0.1, "worst10": 0.6 + 0.03 * (label == "q-FFL q=0.1")
                         + 0.05 * (label == "q-FFL q=1, L=2"), "client_mean": 0.8})
    blocks = ft.summarise(rows)
    lines = ft.targets(blocks, "adult")
    line = next(t for t in lines if "FairFed β=1 + local reweighing vs FedAvg:" in t)
    assert "α = 0.1, MLP, FairFed β=1 + local reweighing vs FedAvg: |EOD| below in 2/3 seeds" in line
    assert "(change -6.0 points, per seed -10.0, -10.0, +2.0; within the seeds' spread of 6.9)" in line
    assert "mean accuracy -1.00 points" in line
    same = next(t for t in lines if "FairFed β=1 + local reweighing vs FedAvg + local reweighing:" in t)
    assert "below in 2/3 seeds (change -1.0 points, per seed -5.0, -5.0, +7.0; within the seeds' spread of 6.9)" in same
    assert not any("(weights only) vs FedAvg + " in t for t in lines)  # its like-for-like row is FedAvg itself
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(f"{ft.BEGIN[k]}\nold\n{ft.END[k]}" for k in ("adult", "compas", "fmnist")) + "\n")
    tuning = [{"method": "FedAvg", "lipschitz": None, "accuracy": 0.85, "worst10": 0.60}]
    for label, agg, _ in [ft._qffl(q, lip) for q in ft.TUNE_QS for lip in ft.TUNE_LS]:
        good = agg["lipschitz"] in (1.0, 2.0)
        tuning.append({"method": label, "lipschitz": agg["lipschitz"], "accuracy": 0.845 if good else 0.80,
                       "worst10": 0.66 + 0.01 * (agg["lipschitz"] == 1.0) if good else 0.70})
    lipschitz, log = ft.choose_lipschitz(tuning)
    assert lipschitz == 1.0  # the best worst-10% among the runs within 1 point of FedAvg's accuracy
    assert "q-FFL q=5, L=1/lr: accuracy -5.0 points, worst-10% +10.0 points" in log
    assert ft.choose_lipschitz(tuning[:1] + [dict(r, accuracy=0.5) for r in tuning[1:]])[0] is None
    ft.write_readme(rows, readme=readme, minutes=1.0, processes=2, lipschitz=2.0, tuning=log, extra_runs=9)
    text = readme.read_text()
    assert "| q-FFL q=1, L=2 | 80.0 ± 0.0 | 80.0 ± 0.0 | 10.0 ± 0.0 | 65.0 ± 0.0 | +5.0, +5.0, +5.0 |" in text
    assert "- q-FFL q=1, L=2: worst-10% +5.0 points (per seed +5.0, +5.0, +5.0), mean test accuracy +0.0 points: meets" in text
    assert "- q-FFL q=1: worst-10% +0.0 points" in text and "misses the target" in text
    assert "chosen: L = 2:" in text
    assert "| 0.1 | MLP | FedAvg | 85.0 ± 0.0 | 20.0 ± 0.0 |" in text and "old" in text  # compas block untouched
    assert "| q-FFL q=0.1 | 80.0 ± 0.0 | 80.0 ± 0.0 | 10.0 ± 0.0 | 63.0 ± 0.0 | +3.0, +3.0, +3.0 |" in text
