"""A training run in MLflow, as an observer of :func:`fedops.round.run_training`.

One MLflow run per training job, whatever happens to the process:

* a fresh job creates the run (params, tags, data artifacts, the privacy disclosure) and stores
  its id in the job's state, which is checkpointed before the first round;
* a resumed job reopens that run (status back to RUNNING, tags ``fedops.resumed*``), first logs
  the record of the last checkpointed round if the killed attempt did not, and goes on;
* each round's record is logged as its client table (an artifact, overwritten if logged again)
  and then one metrics batch (one transaction) with the record's own timestamp, so a step is
  never logged twice;
* a round's record is written on a writer thread while the next round trains; the round loop
  waits for those writes (:meth:`MlflowObserver.flush`) before it checkpoints the next round, so
  every checkpointed round is tracked except perhaps the last, which a resumed job logs first;
  a failed write fails the job at that wait, as it would have failed it at the write;
* the model is logged and registered once per run (a resumed finish reuses them);
* the run ends FINISHED, FAILED, or KILLED (interrupted); a discarded attempt (``--fresh``)
  whose run was left RUNNING by a killed process is marked KILLED.

A killed process cannot end its own run: that run stays RUNNING until the same command resumes it.
Only the release policy's record reaches this module.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fedops import failpoints
from fedops.config import Config
from fedops.paths import Paths
from fedops.round.outputs import rounds_csv
from fedops.tracking.mlflow_tracker import RunTracker, resolve_tracking_uri

SENTINEL = "time/round_s"
"""Logged in every round under every release policy: its steps are the rounds already logged."""
CLIENT_ROWS = "clients.jsonl"
"""Released client rows of every round, kept beside the checkpoints for the table across rounds."""


def _experiment(config: Config) -> str:
    return config.tracking.experiment or config.name


class MlflowObserver:
    def __init__(self, *, config: Config, paths: Paths, checkpoint_dir: Path | None = None,
                 executor: str = "sequential") -> None:
        self.config, self.paths = config, paths
        self.checkpoint_dir = checkpoint_dir
        self.executor = executor
        self.tracking_uri = resolve_tracking_uri(config.tracking.uri, paths.mlflow_dir)
        self.tracker: RunTracker | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def _open(self, run_id: str | None = None, tags: dict[str, str] | None = None) -> RunTracker:
        return RunTracker(tracking_uri=self.tracking_uri, experiment=_experiment(self.config),
                          artifact_dir=self.paths.mlflow_dir / "artifacts", run_name=f"{self.config.name}-federated",
                          run_id=run_id, tags=tags)

    # --- observer hooks -----------------------------------------------------------------------
    def abandoned(self, extras: dict[str, Any]) -> None:
        run_id = (extras.get("mlflow") or {}).get("run_id")
        if not run_id:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "fedops.abandoned", "a later attempt started over (--fresh)")
            client.set_terminated(run_id, status="KILLED")

    def started(self, run, *, resumed_from: int | None) -> None:
        known = run.extras.get("mlflow") or {}
        if known.get("run_id"):
            self.tracker = self._open(run_id=known["run_id"])
            count = int(self.tracker.client.get_run(self.tracker.run_id).data.tags.get("fedops.resume_count", "0")) + 1
            self.tracker.set_tags({"fedops.resumed": "true", "fedops.resume_count": str(count),
                                   f"fedops.resumed_{count}_from_round": str(resumed_from)})
            self._link_orchestrator(run)
            self._catch_up(run)
            return
        orphan = self._orphan()
        if orphan is not None:  # killed after creating its run, before its first checkpoint
            self.tracker = self._open(run_id=orphan)
        else:
            self.tracker = self._open(tags=self._tags(run))
            self.tracker.log_params(self.config.flat_params())
        self._log_setup(run)
        run.extras["mlflow"] = {"run_id": self.tracker.run_id, "experiment_id": self.tracker.experiment_id,
                                "tracking_uri": self.tracking_uri}
        self._link_orchestrator(run)

    def round_done(self, run, record) -> None:
        """Hand the round's record to the writer thread (after the previous round's writes)."""
        self.flush()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedops-mlflow")
        self._pending = self._writer.submit(self._log_round, record)

    def flush(self) -> None:
        """Wait until the last round handed over is written; a failed write is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def _log_round(self, record) -> None:
        if record.client_table is not None:
            self.tracker.log_dict(record.client_table, f"clients/round_{record.round:04d}.json")
            if self.checkpoint_dir is not None:  # for the table across rounds, logged at the end
                with open(self.checkpoint_dir / CLIENT_ROWS, "a") as fh:
                    fh.writelines(json.dumps(row, default=float) + "\n" for row in record.client_table)
        if record.client_accuracy is not None:
            self.tracker.log_dict({"round": record.round, "client_accuracy": record.client_accuracy},
                                  f"fairness/clients_round_{record.round:04d}.json")
        failpoints.hit("tracking.artifacts", round_idx=record.round)
        self.tracker.log_metrics(record.metrics, step=record.round, timestamp_ms=record.timestamp_ms)

    def finished(self, run, result) -> None:
        self._close()
        t = self.tracker
        t.log_text(rounds_csv(result.history), "reports/rounds.csv")
        self._log_tables_and_curves(result)
        self._log_crowd(run, result)
        tags = {"model.params_sha256": result.digest}
        if result.stopped:
            tags["fedops.stopped"] = result.stopped
        failed = self._log_fairness(run, result)
        if failed:
            tags["fedops.fairness_failed"] = "; ".join(failed)[:5000]
        t.set_tags(tags)
        if self.config.tracking.register_model:
            self._register(run, result, withhold=("failed fairness checks: " + "; ".join(failed)) if failed else None)
        t.end("FINISHED")

    def _log_fairness(self, run, result) -> list[str]:
        """The fairness report and picture as artifacts; returns the failed checks' messages."""
        if not self.config.fairness_on:
            return []
        from fedops.fairness.report import fairness_report, report_figure

        report = fairness_report(run, result.history)
        self.tracker.log_dict(report, "fairness/report.json")
        self.tracker.client.log_figure(self.tracker.run_id, report_figure(report), "plots/fairness.png")
        checks = report.get("checks", [])
        if checks:
            self.tracker.set_tags({"fedops.fairness_checks": "passed" if report["passed"] else "failed"})
        return [c["message"] for c in checks if not c["passed"]]

    def _register(self, run, result, *, withhold: str | None = None) -> None:
        """Log the model (pickle-free, with a signature), register it, and move the ``current``
        alias only if it is not worse than the version holding it. A failure here keeps the run
        FINISHED and the model in the work directory, and says how to register it by hand.

        The new version's accuracy is the run's evaluation of its final parameters (the ones
        logged), when the last round was evaluated; otherwise the logged model is loaded and
        evaluated on the same test set."""
        from fedops.tracking.promotion import decide, model_accuracy, dataset_digest

        t, cfg = self.tracker, self.config
        name = cfg.tracking.model_name or cfg.name
        info = run.extras.setdefault("mlflow", {})
        testset = run.world.testset
        x, y = testset.x.numpy(), testset.y.numpy()
        try:
            uri = t.log_model(run.final_model(), input_example=x[:2])
            version = t.register(uri, name)
            final = result.history[-1] if result.history else {}
            measured = final.get("test/accuracy") if final.get("round") == result.rounds else None
            decision = decide(t.client, name=name, version=version, margin=cfg.tracking.promote_margin,
                              accuracy_of=lambda model_uri: model_accuracy(model_uri, x, y), withhold=withhold,
                              test_set=dataset_digest(x, y), accuracy=measured)
        except Exception as exc:  # training is not lost: the model file is already in the work directory
            why = f"{type(exc).__name__}: {exc}"[:1000]
            t.set_tags({"fedops.registration_failed": (
                f"{why}. The trained model is in {self.paths.model}; to register it: python -c \"import mlflow; "
                f"mlflow.set_tracking_uri('{self.tracking_uri}'); mlflow.register_model('runs:/{t.run_id}/model', "
                f"'{name}')\"")})
            info.update(registered_model=None, registered_version=None, registration_error=why)
            return
        t.set_tags({"fedops.promotion": decision.reason, "fedops.registered_version": version})
        info.update(registered_model=name, registered_version=version, promoted=decision.promoted,
                    promotion=decision.reason)

    def _log_tables_and_curves(self, result) -> None:
        """The client table across rounds as one MLflow table, and the curves as a picture."""
        import pandas as pd

        rows_file = None if self.checkpoint_dir is None else self.checkpoint_dir / CLIENT_ROWS
        if rows_file is not None and rows_file.is_file():
            rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
            table = pd.DataFrame(rows).drop_duplicates(subset=["round", "client_id"], keep="last")
            self.tracker.client.log_table(self.tracker.run_id, table.sort_values(["round", "client_id"]),
                                          "clients.json")
        figure = curves_figure(result.history)
        if figure is not None:
            self.tracker.client.log_figure(self.tracker.run_id, figure, "plots/curves.png")

    def _log_crowd(self, run, result) -> None:
        """Contribution table and plot, the task's points, and the ledger's view of this run's
        clients (their reputations) and of this task (its events), as MLflow tables."""
        import pandas as pd

        crowd, client, rid = getattr(run, "crowd", None), self.tracker.client, self.tracker.run_id
        if crowd is None:
            return
        if crowd.contributions and run.release.mode == "full":
            table = pd.DataFrame(crowd.contributions)
            client.log_table(rid, table, "contribution/table.json")
            client.log_figure(rid, contribution_figure(table), "plots/contribution.png")
        incentives = run.extras.get("incentives")
        if incentives:
            points, cumulative = incentives["points"], crowd.cumulative
            client.log_table(rid, pd.DataFrame(
                [{"client_id": int(c), "points": float(p), "rounds_completed": incentives["rounds_completed"][c],
                  "contribution": cumulative.get(int(c))} for c, p in sorted(points.items())]),
                "incentives/points.json")
            self.tracker.log_metrics({"incentives/points_total": float(sum(points.values())),
                                      "incentives/participants": float(len(points))}, step=result.rounds)
        if crowd.ledger is not None:
            from fedops.reputation.export import ledger_tables

            events, clients = ledger_tables(crowd.ledger, task=crowd.task, clients=range(run.num_clients),
                                            params=crowd.params)
            client.log_table(rid, events, "reputation/task_events.json")
            client.log_table(rid, clients, "reputation/clients.json")
            self.tracker.set_tags({"fedops.reputation_task": crowd.task})

    def failed(self, run, *, status: str, error: BaseException) -> None:
        if self.tracker is None:
            return
        try:  # what the writer still holds goes in before the run ends
            self._close()
        except BaseException:  # the job's failure already, or a second Ctrl-C: the run is ended all the same
            pass
        what = f"{type(error).__name__}: {error}"[:5000]
        self.tracker.set_tags({"fedops.failure" if status == "FAILED" else "fedops.killed": what,
                               # the checkpoint's round: a round trained after it but not checkpointed is not complete
                               "fedops.last_complete_round": str(self._last_complete(run))})
        self.tracker.end(status)

    # --- helpers ------------------------------------------------------------------------------
    def _last_complete(self, run) -> int:
        """The round the job resumes after: its checkpoint's (the run may have trained past it)."""
        saved = None if self.checkpoint_dir is None else checkpointed_round(self.checkpoint_dir)
        return run.round_idx if saved is None else saved

    def _tags(self, run) -> dict[str, str]:
        cfg = self.config
        tags = {"fedops.role": "federated", "fedops.dataset": cfg.data.name, "fedops.config": cfg.name,
                "fedops.aggregator": cfg.server.aggregator.name, "fedops.partitioner": cfg.partition.partitioner.name,
                "fedops.devices": ",".join(str(d) for d in run.world.runtime.devices), "fedops.executor": self.executor,
                "fedops.release": run.release.mode, "model.num_params": str(run.layout.size)}
        if self.checkpoint_dir is not None:
            tags["fedops.checkpoint"] = str(self.checkpoint_dir)
        sim = cfg.simulation
        if sim.attack.name != "none":  # attack runs are easy to filter: tags.`fedops.attack` != ''
            tags.update({"fedops.attack": sim.attack.name, "fedops.malicious_fraction": str(sim.malicious_fraction),
                         "fedops.malicious_clients": str(len(run.world.runtime.malicious))})
        if cfg.privacy.mode != "none":
            tags["fedops.privacy_randomness"] = cfg.privacy.randomness
        return tags

    def _log_setup(self, run) -> None:
        """Data artifacts, bad-data tags and the privacy disclosure (idempotent: files overwrite)."""
        t, cfg, paths = self.tracker, self.config, self.paths
        per_client = run.release.per_client_artifacts
        artifacts = [paths.validation_report]
        if per_client:
            artifacts += [paths.manifest, paths.heatmap, paths.client_validation_report]
            if run.data_failures:
                t.set_tags({"fedops.bad_data_clients": ",".join(map(str, sorted(run.data_failures))),
                            "fedops.bad_data_policy": cfg.quality.bad_data})
        for artifact in artifacts:
            if artifact.is_file():
                t.log_artifact(artifact, "data")
        if cfg.privacy.mode != "none":
            disclosure = run.privacy_disclosure()
            t.log_params({f"privacy.disclosure.{k}": v for k, v in disclosure.items()})
            t.log_dict(disclosure, "privacy/disclosure.json")

    def _link_orchestrator(self, run) -> None:
        """Tags naming the Prefect flow run that runs this attempt (the flow run links back)."""
        prefect = run.extras.get("prefect") or {}
        if prefect.get("flow_run_id"):
            self.tracker.set_tags({"prefect.flow_run_id": prefect["flow_run_id"],
                                   "prefect.flow_run_name": prefect.get("flow_run_name", ""),
                                   "prefect.flow_run_url": prefect.get("flow_run_url", "")})

    def _orphan(self) -> str | None:
        """A run of this checkpoint directory that never reached its first checkpoint (left
        RUNNING by a killed process, or since marked KILLED by :func:`mark_stale_runs`)."""
        if self.checkpoint_dir is None:
            return None
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(_experiment(self.config))
        if exp is None:
            return None
        where = str(self.checkpoint_dir).replace("'", "\\'")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`fedops.checkpoint` = '{where}'",
                                  max_results=20)
        fresh = [r for r in runs if r.info.status in ("RUNNING", "KILLED") and not r.data.metrics]
        return fresh[0].info.run_id if fresh else None

    def _catch_up(self, run) -> None:
        """Log the last checkpointed round's record if the killed attempt had not."""
        record = run.last_record
        if record is not None and record.round not in self.tracker.logged_steps(SENTINEL):
            self.round_done(run, record)


def _manifest(directory: Path) -> dict[str, Any]:
    """A checkpoint directory's manifest, or {} when it has none or it is unreadable."""
    manifest = directory / "manifest.json"
    try:
        return json.loads(manifest.read_text()) if manifest.is_file() else {}
    except (OSError, ValueError):
        return {}


def checkpointed_round(directory: Path) -> int | None:
    """The round a checkpoint directory's manifest names (None: no readable manifest)."""
    saved = _manifest(directory).get("round")
    return None if saved is None else int(saved)


def mark_stale_runs(paths: Paths, tracking_uri: str) -> list[str]:
    """Training runs of this work directory that a killed process left RUNNING become KILLED.

    Call it holding the work directory's lock (:mod:`fedops.workdir`): then no live process is
    training here, and a RUNNING run tagged with one of its checkpoint directories is stale. It
    costs nothing unless a checkpoint directory holds an unfinished run. Returns the run ids marked."""
    import json
    import os
    import time

    root = paths.checkpoints
    stale_dirs = {}  # directory: its last checkpointed round
    for directory in root.glob("*") if root.is_dir() else []:
        saved = _manifest(directory)
        if directory.is_dir() and not saved.get("finished"):
            stale_dirs[str(directory)] = int(saved.get("round") or 0)
    if not stale_dirs:
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    marked = []
    for directory, last_round in stale_dirs.items():
        where = directory.replace("'", "\\'")
        for run in client.search_runs(experiments, filter_string=(
                f"tags.`fedops.checkpoint` = '{where}' and attributes.status = 'RUNNING'")) if experiments else []:
            # the checkpoint's round, not the last logged step: that round's writes may not have landed
            client.set_tag(run.info.run_id, "fedops.killed", (
                f"its process was gone (killed) at round {last_round}; marked by pid {os.getpid()} at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}; the same command resumes it"))
            client.set_terminated(run.info.run_id, status="KILLED")
            marked.append(run.info.run_id)
    return marked


CURVES = (("test accuracy", ("test/accuracy",)), ("loss", ("test/loss", "train/loss")),
          ("upload bytes per round", ("comm/bytes_up",)), ("epsilon spent", ("privacy/epsilon",)))


def curves_figure(history: list[dict[str, Any]]):
    """One panel per released curve (accuracy, test and training loss, bytes, epsilon) over the
    rounds; None if none. matplotlib's object API on the Agg canvas: no global backend state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(title, [k for k in keys if any(h.get(k) is not None for h in history)]) for title, keys in CURVES]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.2), layout="tight")
    FigureCanvasAgg(fig)
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            points = [(h["round"], h[key]) for h in history if h.get(key) is not None]
            ax.plot([r for r, _ in points], [v for _, v in points], marker="o" if len(points) < 40 else None, ms=3,
                    label=key)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def contribution_figure(table):
    """Each client's cumulative contribution over the rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    wide = table.pivot_table(index="round", columns="client_id", values="value", aggfunc="sum").fillna(0.0).cumsum()
    for c in wide.columns:
        ax.plot(wide.index, wide[c], label=f"client {c}", linewidth=1)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative contribution")
    if len(wide.columns) <= 12:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
