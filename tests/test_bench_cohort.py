"""The cohort benchmark: a small real run (every side trains the same clients, the cohort sides
agree with the one-client-at-a-time ones), its table's ratios from hand-made seconds, and the
CLI's refusals."""

import pytest
from typer.testing import CliRunner

from fedops.cli import app
from fedops_benchmarks import cohort_speed


def test_a_small_run_times_every_side_and_their_results_agree():
    r = cohort_speed.run(model="mlp", k=3, rows=40, repeats=1)
    assert set(r["seconds"]) == set(cohort_speed.SIDES) and all(s > 0 for s in r["seconds"].values())
    assert r["fastest_sequential"] in cohort_speed.SEQUENTIAL
    assert max(r["max_abs_diff"].values()) < 1e-5  # float32, 2 steps: the same SGD on every side
    assert r["ratio"][r["fastest_sequential"]] == 1.0


def test_table_ratios_from_hand_made_seconds():
    sec = {"sequential_1t": 2.0, "sequential_2t": 3.0, "sequential_2p": 1.0, "cohort": 0.8, "cohort_autograd": 1.6,
           "cohort_1t": 1.0, "cohort_2p": 0.5}
    r = {"model": "mlp", "k": 10, "seconds": sec, "fastest_sequential": "sequential_2p",
         "per_core": {"1 thread": 2.0, "two 1-thread processes": 2.0}, "max_abs_diff": {"cohort": 1e-8}}
    line = cohort_speed.format_table([r])[2]
    assert "**2.00×** (cohort_2p vs sequential_2p)" in line and "| 2.00×, 2.00× |" in line


@pytest.mark.parametrize("args, words", [
    (["--models", "resnet"], "unknown ['resnet']"),
    (["--ks", "ten"], "expected comma-separated client counts"),
    (["--ks", "0"], "expected comma-separated client counts"),
])
def test_bench_cohort_refuses_bad_options_by_name(args, words):
    result = CliRunner().invoke(app, ["bench", "cohort", *args])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and words in text, text
