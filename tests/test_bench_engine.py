"""The engine benchmark's arithmetic and README block (hand-made results, no training), and
Flower's side importing nothing of fedops at its top level (it runs in Flower's own environment)."""

import ast
import threading
import time
from pathlib import Path

import pytest

from fedops_benchmarks import engine, flower_peer


def test_steady_state_is_the_median_gap_of_the_middle_rounds():
    # round ends at 0, 10 (round 1: warm-up), 11, 13, 14, 20 (last round: evaluation)
    assert engine.steady([0.0, 10.0, 11.0, 13.0, 14.0, 20.0]) == 1.0  # gaps 10 | 1 2 1 | 6 -> median 1
    assert engine.steady([0.0, 2.0, 5.0]) == 2.5  # too few rounds to drop any: the gaps' median


def test_table_ratios_and_readme_block(tmp_path):
    row = lambda per, e2e: {"s_per_round": per, "end_to_end_s": e2e, "peak_rss_mb": 1000.0, "cpu_s": 9.0,  # noqa: E731
                            "test_accuracy": 0.5}
    r = {"rounds": 5, "repeats": 1, "prepare_s": 3.0, "samples_per_round": 6000.0,
         "table": {"mlp": {"bare": row(0.4, 10.0), "bare_procs": row(0.25, 12.0), "auto": row(0.5, 20.0),
                           "flower": row(3.0, 60.0)}}}
    lines = engine.format_table(r)
    auto = next(line for line in lines if line.startswith("| fedops in process, auto"))
    cells = [c.strip() for c in auto.strip("|").split("|")]
    # s/round, samples/s, x fastest bare (0.5/0.25), Flower/side per round (3/0.5), e2e, Flower/side e2e (60/20)
    assert cells[1:7] == ["0.50", "12,000", "2.00", "6.00", "20.0", "3.00"]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- engine-table:begin -->\nold\n<!-- engine-table:end -->\nrest\n")
    engine.write_readme(r, readme)
    text = readme.read_text()
    assert "prepare + validate + partition 3.0 s" in text
    r["stages_s"] = {"prepare": 1.25, "validate": 1.0, "partition": 0.75}
    assert "prepare 1.2 s" in engine.format_table(r)[0] and "partition 0.8 s (1,000 clients" in engine.format_table(r)[0]
    assert "old" not in text and auto in text and text.startswith("intro\n") and text.endswith("rest\n")


def test_flower_side_imports_nothing_of_fedops_at_its_top_level():
    tree = ast.parse(Path(flower_peer.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert names and not any(str(m).startswith("fedops") for m in names), names


def test_the_rss_sampler_sees_this_process():
    stop, peak = threading.Event(), [0.0]
    t = threading.Thread(target=flower_peer._rss_sampler, args=(stop, peak), daemon=True)
    t.start()
    time.sleep(1.2)
    stop.set()
    t.join(5)
    assert peak[0] > 10  # MB: at least this interpreter with pytest loaded


def test_tree_cpu_counts_a_live_child_and_then_the_reaped_one():
    import subprocess
    import sys

    spin = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    before = flower_peer.tree_cpu_s()
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        deadline = time.time() + 20
        while flower_peer.tree_cpu_s() - before < 0.6 and time.time() < deadline:
            time.sleep(0.2)
        live = flower_peer.tree_cpu_s() - before  # the child is still running (sleeping): read from /proc
        assert child.poll() is None and live >= 0.6
    finally:
        child.kill()
        child.wait()
    assert flower_peer.tree_cpu_s() - before >= 0.6  # reaped: in this process's children times


def test_a_side_reports_its_own_peak_not_its_parents():
    """getrusage's ru_maxrss survives exec: a side started from a large driver would report the
    driver's resident set. The side's peak is its own (VmHWM)."""
    import subprocess
    import sys

    big = b"x" * (400 * 2**20)  # touched: 400 MB resident in this (the parent) process
    code = "from fedops_benchmarks.engine import _peak_rss_mb; print(_peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert len(big) and 5 < child < 300, child


def test_a_side_runs_as_its_own_process(tmp_path):
    """The side's entry point (``python -m fedops_benchmarks.engine``) runs with the module whole:
    an unknown side is refused by argparse, after every definition is in place."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fedops_benchmarks.engine", "--side", "nope", "--model", "mlp",
                           "--rounds", "3", "--workdir", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr
    tree = ast.parse(Path(engine.__file__).read_text())
    main = [i for i, n in enumerate(tree.body) if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert main == [len(tree.body) - 1]  # the entry point is the module's last statement


def test_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="model 'resnet'.*mlp, small_cnn"):
        engine.config("resnet", rounds=3)


def test_dp_sides_alone_are_compared_with_opacus_one_at_a_time():
    row = {"samples_per_s": None, "end_to_end_s": 20.0, "peak_rss_mb": 1000.0, "cpu_s": 10.0, "test_accuracy": 0.5}
    r = {"rounds": 5, "repeats": 2, "prepare_s": 3.0, "samples_per_round": 6000.0,
         "table": {"small_cnn": {"dp_sequential": {**row, "s_per_round": 2.0},
                                 "dp_cohort": {**row, "s_per_round": 1.0}}}}
    lines = engine.format_table(r)
    assert any("| x dp_sequential |" in line for line in lines)
    cohort = next(line for line in lines if line.startswith("| fedops in process, local DP-SGD, cohort"))
    assert [c.strip() for c in cohort.strip("|").split("|")][1:4] == ["1.00", "6,000", "0.50"]
    assert set(engine.DP_SIDES) <= set(engine.LABELS)


def test_bench_engine_refuses_unknown_sides_by_name_before_running_anything():
    from typer.testing import CliRunner

    from fedops.cli import app

    def run(*args):  # the error panel's text, unwrapped
        result = CliRunner().invoke(app, ["bench", "engine", *args])
        return result.exit_code, " ".join(result.output.replace("│", " ").split())

    code, text = run("--sides", "dp_cohort,vmap")
    assert code == 2 and "unknown ['vmap']" in text and "dp_sequential" in text
    code, text = run("--sides", "dp_cohort", "--write-readme")
    assert code == 2 and "without --sides" in text
