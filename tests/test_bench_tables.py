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
