"""Starts due tasks as Prefect deployment runs and keeps them going: a task whose training run
crashed or failed is run again on the same work directory (the training flow resumes from its last
checkpointed round), at most ``attempts`` times. The task's state and progress are Prefect's and
MLflow's (:mod:`fedops.market.results`); the market keeps only the flow run ids.

Every trigger carries an idempotency key (task id and attempt), so a service that restarts between
triggering a run and recording it triggers nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time

from fedops.market.service import LAUNCHED, STARTING, Market, MarketError

DEPLOYMENT = "federated-training/market"
log = logging.getLogger("fedops.market")
RETRY_STATES = {"CRASHED", "FAILED"}


class Launcher:
    def __init__(self, market: Market, *, deployment: str = DEPLOYMENT, poll_s: float = 1.0, attempts: int = 3) -> None:
        self.market, self.deployment, self.poll_s, self.attempts = market, deployment, poll_s, attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settled: set[str] = set()
        """Tasks whose last run completed, or that ran out of attempts: not polled again."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fedops-market-launcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the next tick tries again; the service keeps serving
                log.warning("launcher: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        """One pass: start or cancel due tasks, trigger started ones, re-run crashed ones. A task
        that fails here is logged and tried again next tick; the others go on."""
        for action, task_id in self.market.due():
            self._each(task_id, self._due, action, task_id)
        for task in self.market.tasks(state=STARTING):
            self._each(task.id, self.trigger, task.id, attempt=1)
        for task in self.market.tasks(state=LAUNCHED):
            if task.id not in self._settled:
                self._each(task.id, self._reconcile, task)

    @staticmethod
    def _each(task_id: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            log.warning("task %s: %s: %s", task_id, type(exc).__name__, exc)

    def _due(self, action: str, task_id: str) -> None:
        if action == "cancel":
            self.market.mark_cancelled(task_id, "the start time came with fewer owners than min_owners",
                                       only_if_due=True)
            return
        try:
            self.market.begin_start(task_id)
        except MarketError as exc:
            if "no longer holds" in exc.message:  # an owner left between the check and the start
                return
            # e.g. the enrolled owners' devices break the config: cancelled with the reason, not retried
            self.market.mark_cancelled(task_id, f"could not start: {exc.message}")
            log.warning("task %s: %s", task_id, exc.message)

    def trigger(self, task_id: str, *, attempt: int) -> str:
        from prefect.deployments import run_deployment

        run = run_deployment(self.deployment, timeout=0, idempotency_key=f"fedops-market-{task_id}-{attempt}",
                             tags=["fedops-market", f"market-task-{task_id}"],
                             parameters={"config": str(self.market.config_path(task_id)), "overrides": {},
                                         "workdir": str(self.market.workdir(task_id)), "fresh": False})
        note = None if attempt == 1 else f"attempt {attempt}: resuming after the previous run ended badly"
        self.market.record_flow_run(task_id, str(run.id), note=note)
        log.info("task %s: flow run %s (attempt %d)", task_id, run.id, attempt)
        return str(run.id)

    def _reconcile(self, task) -> None:
        from fedops.market.results import flow_runs

        runs = flow_runs(task.flow_run_ids)
        if not runs:
            return
        last = runs[-1]
        if last["type"] == "COMPLETED":
            self._settled.add(task.id)
        elif last["type"] in RETRY_STATES:
            if len(task.flow_run_ids) < self.attempts:
                self.trigger(task.id, attempt=len(task.flow_run_ids) + 1)
            else:
                self.market.set_note(task.id, f"gave up after {self.attempts} attempts: the last run is {last['state']}")
                self._settled.add(task.id)


def serve_runner(root: str) -> None:  # pragma: no cover - the runner process (tested end to end)
    """The Prefect runner that executes the market's training runs (``fedops market serve`` starts
    it beside the web service unless ``--no-runner``)."""
    from pathlib import Path

    from prefect import serve

    from flows.training import federated_training

    params = {"config": "", "overrides": {}, "workdir": str(Path(root) / "tasks"), "fresh": False}
    serve(federated_training.to_deployment(name=DEPLOYMENT.split("/")[1], parameters=params,
                                           tags=["fedops", "fedops-market"],
                                           description="fedops market: one task's federated training"))


def wait_for_deployment(deployment: str = DEPLOYMENT, timeout_s: float = 120.0) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.time() + timeout_s
    while True:
        try:
            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(deployment)
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
