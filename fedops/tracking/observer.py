"""A training run in MLflow, as an observer of :func:`fedops.round.run_training`.

One MLflow run per training job, whatever happens to the process:

* a fresh job creates the run (params, tags, data artifacts, the privacy disclosure) and stores
  its id in the job's state, which is checkpointed before the first round;
* a resumed job reopens that run (status back to RUNNING, tags ``fedops.resumed*``), first logs
  the record of the last checkpointed round if the killed attempt did not, and goes on;
* each round's record is logged as its client table (an artifact, overwritten if logged again)
  and then one metrics batch (one transaction) with the record's own timestamp, so a step is
  never logged twice;
* the model is logged and registered once per run (a resumed finish reuses them);
* the run ends FINISHED, FAILED, or KILLED (interrupted); a discarded attempt (``--fresh``)
  whose run was left RUNNING by a killed process is marked KILLED.

A killed process cannot end its own run: that run stays RUNNING until the same command resumes it.
Only the release policy's record reaches this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedops import failpoints
from fedops.config import Config
from fedops.paths import Paths
from fedops.round.outputs import rounds_csv
from fedops.tracking.mlflow_tracker import RunTracker, resolve_tracking_uri

SENTINEL = "time/round_s"
"""Logged in every round under every release policy: its steps are the rounds already logged."""


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

    def round_done(self, run, record) -> None:
        if record.client_table is not None:
            self.tracker.log_dict(record.client_table, f"clients/round_{record.round:04d}.json")
        failpoints.hit("tracking.artifacts", round_idx=record.round)
        self.tracker.log_metrics(record.metrics, step=record.round, timestamp_ms=record.timestamp_ms)

    def finished(self, run, result) -> None:
        t = self.tracker
        t.log_text(rounds_csv(result.history), "reports/rounds.csv")
        tags = {"model.params_sha256": result.digest}
        if result.stopped:
            tags["fedops.stopped"] = result.stopped
        t.set_tags(tags)
        info = run.extras.setdefault("mlflow", {})
        if self.config.tracking.register_model:
            name = self.config.tracking.model_name or self.config.name
            info["registered_model"] = name
            info["registered_version"] = t.log_model(run.final_model(), name="model", registered_model_name=name,
                                                     alias="current")
        t.end("FINISHED")

    def failed(self, run, *, status: str, error: BaseException) -> None:
        if self.tracker is None:
            return
        self.tracker.set_tags({"fedops.failure": f"{type(error).__name__}: {error}"[:5000]})
        self.tracker.end(status)

    # --- helpers ------------------------------------------------------------------------------
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

    def _orphan(self) -> str | None:
        """A RUNNING run of this checkpoint directory that never reached its first checkpoint."""
        if self.checkpoint_dir is None:
            return None
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(_experiment(self.config))
        if exp is None:
            return None
        where = str(self.checkpoint_dir).replace("'", "\\'")
        runs = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`fedops.checkpoint` = '{where}' and attributes.status = 'RUNNING'"), max_results=5)
        fresh = [r for r in runs if not r.data.metrics]
        return fresh[0].info.run_id if fresh else None

    def _catch_up(self, run) -> None:
        """Log the last checkpointed round's record if the killed attempt had not."""
        record = run.last_record
        if record is not None and record.round not in self.tracker.logged_steps(SENTINEL):
            self.round_done(run, record)
