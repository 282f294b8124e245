"""DVC as its users drive it, on a scratch git repository holding this project's dvc.yaml and DVC
config with a seconds-long parameter set: `dvc repro` runs the six stages against one local Prefect
API server (started once, by the first stage), `dvc exp run -S client.lr=0.1` records an experiment
that `dvc exp show` lists beside main with both accuracies, `dvc metrics diff` reads HEAD, and
`dvc plots diff` writes a page that renders in headless Chromium with the network cut off."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("fedops", "flows"):
        shutil.copytree(ROOT / item, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    params = _deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                         yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text()))
    params["server"]["rounds"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PREFECT_HOME=str(tmp_path / "prefect"),
               FEDOPS_PREFECT_IDLE_SECONDS="20", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")

    def run(*args, check=True, timeout=900):
        proc = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
        return proc

    run("git", "init", "-q", "-b", "main")
    run(str(BIN / "dvc"), "init", "-q")
    for name in ("config", "offline_plots.html"):
        shutil.copy(ROOT / ".dvc" / name, repo / ".dvc" / name)
    run("git", "add", "-A")
    run("git", "commit", "-qm", "project")
    yield repo, run, tmp_path / "prefect"
    from flows.api_server import stop

    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(tmp_path / "prefect")
    try:
        stop(only_if_unused=False)
    finally:
        os.environ["PREFECT_HOME"] = old


def _starts(prefect_home: Path) -> int:
    log = prefect_home / "fedops-api.log"
    return log.read_text().count("started prefect server") if log.exists() else 0


def test_repro_once_then_an_experiment_that_exp_show_metrics_and_plots_diff_can_read(repo):
    repo, run, prefect_home = repo
    dvc = str(BIN / "dvc")
    run(dvc, "repro")
    assert _starts(prefect_home) == 1  # six stages, six processes, one Prefect server
    tracked = run("git", "status", "--porcelain", "-uall").stdout
    for path in ("reports/metrics.json", "reports/rounds.csv", "reports/baseline.json", "dvc.lock"):
        assert path in tracked, tracked  # git-tracked, so experiments carry them
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline run")
    main_accuracy = json.loads((repo / "reports" / "metrics.json").read_text())["test_accuracy"]

    run(dvc, "exp", "run", "-S", "client.lr=0.1", "-n", "lr-0.1")
    table = list(csv.DictReader(io.StringIO(run(dvc, "exp", "show", "--csv").stdout)))
    column = next(c for c in table[0] if c.endswith("test_accuracy") and "baseline" not in c)
    rows = {row["Experiment"] or row["rev"]: row for row in table}
    assert float(rows["lr-0.1"][column]) != float(main_accuracy)
    workspace_or_main = [r for r in table if r["rev"] in ("main", "workspace") and r[column]]
    assert any(abs(float(r[column]) - main_accuracy) < 1e-9 for r in workspace_or_main), table
    assert rows["lr-0.1"]["client.lr"] == "0.1"

    diff = json.loads(run(dvc, "metrics", "diff", "HEAD", "--json").stdout)
    assert "reports/metrics.json" in diff  # the workspace holds the experiment: accuracy changed

    out = repo / "plots_out"
    run(dvc, "plots", "diff", "HEAD", "lr-0.1", "-o", str(out))
    page = (out / "index.html").read_text()
    assert "<script src=\"http" not in page and "cdn.jsdelivr" not in page  # Vega is inlined
    for title in ("Test accuracy", "Loss", "Bytes uploaded per round", "Privacy budget spent"):
        assert title in page
    browser = _chromium()
    if browser is None:  # scripts/test.sh installs Debian's chromium where it can
        pytest.skip("no chromium on this machine: the page was checked for inlined scripts only")
    shot = out / "screenshot.png"
    # A dead proxy cuts the network: everything must come from the page itself.
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
              "--virtual-time-budget=15000", "--window-size=1300,2400"]
    dom = subprocess.run([*common, "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    assert dom.count('class="marks"') >= 4, dom[:2000]  # each curve drew its Vega canvas or svg
    subprocess.run([*common, f"--screenshot={shot}", (out / "index.html").as_uri()], capture_output=True,
                   timeout=180, check=True)
    from PIL import Image

    image = Image.open(shot).convert("L")
    dark = sum(1 for v in image.getdata() if v < 128)
    assert dark > 2000, dark  # axes, lines and labels, not a blank page


def test_repro_of_the_adult_params_file_records_the_fairness_report(repo):
    """`cp configs/adult.yaml params.yaml && dvc repro`, as the README says (fewer rounds here)."""
    repo, run, _ = repo
    params = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    params["server"]["rounds"] = 2
    params["model"] = {"name": "mlp", "hidden": []}
    params["baseline"]["epochs"] = 1
    params["validation"]["clients"] = False  # the global suites still run; the client ones are tested elsewhere
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git", "commit", "-qam", "adult")
    run(str(BIN / "dvc"), "repro")
    report = json.loads((repo / "reports" / "fairness.json").read_text())
    assert report["enabled"] and report["sensitive_attribute"] == "sex" and len(report["rounds"]) == 2
    assert (repo / "reports" / "fairness.png").is_file()
    metrics = json.loads(run(str(BIN / "dvc"), "metrics", "show", "--json").stdout)
    shown = json.dumps(metrics)
    assert "reports/fairness.json" in shown and "client_acc_worst10" in shown
    baseline = json.loads((repo / "reports" / "baseline.json").read_text())
    assert set(baseline["fairness"]) >= {"dpd", "eqodds", "eopp", "spd", "eod"}
