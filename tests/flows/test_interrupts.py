"""Interruptions through the CLI: SIGINT and SIGTERM, to the process and to its process group, at
a round, and SIGTERM during registration. Each stops the run within seconds, exit status 130 or
143, one line and no traceback, MLflow run KILLED at that round, no process left behind; the
rerun resumes at the next round. A SIGKILLed run is marked KILLED by the next command on its work
directory. Two runs started at once on a fresh work directory: one runs, the other is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FEDOPS = str(Path(sys.executable).parent / "fedops")
pytestmark = pytest.mark.slow

CONFIG = {
    "name": "interrupts", "seed": 0,
    "data": {"name": "synthetic", "num_train": 600, "num_test": 200, "num_classes": 4, "image_size": 8},
    "partition": {"num_clients": 6, "name": "dirichlet", "alpha": 1.0, "min_size": 10},
    "model": {"name": "small_cnn", "channels": [8, 16], "hidden": 32},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.3},
    "server": {"rounds": 7, "fraction": 0.5},
    "baseline": {"enabled": False},
}


def _session_processes(sid: int) -> list[str]:
    """Processes still alive in the session the command was started in (its children)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: the session id
            out.append(stat.parent.name)
    return out


def _command(args, *, failpoint=None, env=None, timeout=600):
    env = {**(env or os.environ)}
    env.pop("FEDOPS_FAILPOINTS", None)
    if failpoint:
        env["FEDOPS_FAILPOINTS"] = failpoint
    # SIGINT back to its default in the child, as in a terminal: a test session started in the background
    # of a non-interactive shell inherits SIGINT ignored, and Python then installs no Ctrl-C handler
    proc = subprocess.Popen([FEDOPS, *args], env=env, cwd=ROOT, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out, err = proc.communicate(timeout=timeout)
    ended = time.time()
    time.sleep(0.5)
    return proc.returncode, out, err, ended, _session_processes(proc.pid)


def _manifest(work: Path) -> dict:
    (found,) = list((work / "checkpoints" / "train").glob("*/manifest.json"))
    return json.loads(found.read_text())


def _run(work: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string="tags.`fedops.role` = 'federated'")
    return run


@pytest.fixture
def job(tmp_path):
    config = tmp_path / "interrupts.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    work = tmp_path / "work"
    from fedops.config import load_config
    from flows.pipeline import run_stage

    cfg = load_config(config)
    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(work))
    return config, work


def test_sigint_and_sigterm_to_the_process_or_its_group_stop_at_a_round_and_resume(job):
    config, work = job
    train = ["stage", "train", "--params", str(config), "--workdir", str(work)]
    ephemeral = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the CLI starts its own server
    steps = [("round.tracked@2=intgroup", 2, 130, "SIGINT", ephemeral),
             ("round.tracked@3=term", 3, 143, "SIGTERM", None),
             ("round.tracked@4=int", 4, 130, "SIGINT", None),
             ("round.tracked@5=termgroup", 5, 143, "SIGTERM", ephemeral),
             ("run.registering=term", 7, 143, "SIGTERM", None)]
    for failpoint, at_round, status, name, env in steps:
        code, _, err, ended, left = _command(train, failpoint=failpoint, env=env)
        manifest = _manifest(work)
        assert code == status and f"interrupted ({name})" in err and "Traceback" not in err, (failpoint, code, err[-2000:])
        assert manifest["round"] == at_round and not manifest["finished"], failpoint
        # stopped within seconds of the signal; before run.registering the final model is logged
        # after the last checkpoint (seconds more on a busy machine), so that step counts from further back
        assert ended - manifest["saved_at"] < (10 if failpoint.startswith("round.") else 60), failpoint
        assert left == [], (failpoint, left)  # no process left behind
        if env is ephemeral:  # the local Prefect API server the command started was stopped with it
            assert not (Path(os.environ["PREFECT_HOME"]) / "fedops-api.json").exists(), failpoint
        run = _run(work)
        assert run.info.status == "KILLED" and run.data.tags["fedops.last_complete_round"] == str(at_round), failpoint
    code, out, err, _, _ = _command(train)
    assert code == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["resumed_from"] == 7 and summary["rounds"] == 7 and summary["registered_version"]
    run = _run(work)
    assert run.info.status == "FINISHED" and run.data.tags["fedops.resume_count"] == "5"


def test_a_sigkilled_run_is_marked_killed_by_the_next_command_on_its_work_dir(job):
    config, work = job
    code, *_ = _command(["stage", "train", "--params", str(config), "--workdir", str(work)],
                        failpoint="round.tracked@2")
    assert code == -9 and _run(work).info.status == "RUNNING"
    code, _, err, _, _ = _command(["stage", "validate", "--params", str(config), "--workdir", str(work)])
    assert code == 0, err[-2000:]
    run = _run(work)
    assert run.info.status == "KILLED" and "at round 2" in run.data.tags["fedops.killed"]
    code, out, err, _, _ = _command(["stage", "train", "--params", str(config), "--workdir", str(work)])
    assert code == 0 and json.loads(out)["resumed_from"] == 2 and _run(work).info.status == "FINISHED"


def test_two_runs_at_once_on_a_fresh_work_dir_one_runs_the_other_is_refused(tmp_path):
    work = tmp_path / "fresh"
    args = [FEDOPS, "run", str(ROOT / "configs" / "tiny.yaml"), "--workdir", str(work), "--set", "server.rounds=2",
            "--set", "baseline.enabled=false"]
    procs = [subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "is in use by pid" in refused and "Traceback" not in refused
    assert json.loads((work / "reports" / "train.json").read_text())["rounds"] == 2
