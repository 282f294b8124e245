"""Evaluate the trained global model, and train the centralised baseline on the same split."""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from prefect import flow

from fedops.client.local import local_train
from fedops.client.runtime import resolve_devices
from fedops.errors import MissingInput
from fedops.evaluation import evaluate
from fedops.io import write_json_atomic
from fedops.paths import Paths
from fedops.rng import STREAM_BASELINE, STREAM_MODEL_INIT, derive_seed, torch_generator
from fedops.tracking import RunTracker, resolve_tracking_uri
from fedops.types import ParamLayout
from flows.stages import _cfg, load_raw


def start_tracker(cfg, paths: Paths, *, role: str, run_name: str) -> RunTracker:
    tracker = RunTracker(
        tracking_uri=resolve_tracking_uri(cfg.tracking.uri, paths.mlflow_dir),
        experiment=cfg.tracking.experiment or cfg.name,
        artifact_dir=paths.mlflow_dir / "artifacts",
        run_name=run_name,
        tags={"fedops.role": role, "fedops.dataset": cfg.data.name, "fedops.config": cfg.name},
    )
    tracker.log_params(cfg.flat_params())
    return tracker


@flow(name="evaluate-model")
def evaluate_flow(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """Test-set metrics of ``models/global.pt`` into ``reports/metrics.json`` and the MLflow run."""
    cfg, paths = _cfg(config), Paths.at(workdir)
    if not paths.model.is_file() or not paths.train_summary.is_file():
        raise MissingInput(f"no trained model at {paths.model}: run the train stage first")
    bundle = cfg.data.to_bundle(load_raw(cfg, paths))
    model = cfg.model.build(input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=0)
    saved = torch.load(paths.model, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    ev = evaluate(model, bundle.x_test, bundle.y_test, num_classes=bundle.num_classes)
    train = json.loads(paths.train_summary.read_text())
    metrics = {
        "test_accuracy": ev["accuracy"],
        "test_loss": ev["loss"],
        "per_class_accuracy": {
            bundle.class_names[c]: ev[f"class_{c}_accuracy"]
            for c in range(bundle.num_classes) if f"class_{c}_accuracy" in ev
        },
        "rounds": train["rounds"],
        "comm_bytes_up_total": train["comm_bytes_up_total"],
        "model_params_sha256": train["model_params_sha256"],
    }
    write_json_atomic(metrics, paths.metrics)
    tracker = RunTracker(tracking_uri=train["tracking_uri"], experiment="", artifact_dir=None, run_id=train["run_id"])
    tracker.log_metrics(
        {"final/test_accuracy": ev["accuracy"], "final/test_loss": ev["loss"],
         **{f"final/class_{metric_safe(k)}_accuracy": v for k, v in metrics["per_class_accuracy"].items()}},
        step=train["rounds"],
    )
    tracker.log_artifact(paths.metrics, "reports")
    tracker.end("FINISHED")
    return metrics


def metric_safe(name: str) -> str:
    """A class name as MLflow allows in a metric key (``<=50K`` -> ``le50K``, ``>50K`` -> ``gt50K``)."""
    import re

    for a, b in (("<=", "le"), (">=", "ge"), ("<", "lt"), (">", "gt")):
        name = name.replace(a, b)
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


@flow(name="centralised-baseline")
def baseline_flow(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """The same model trained centrally on the union of the clients' data (the same train/test
    split), logged as a sibling MLflow run so the federated cost is visible next to it."""
    cfg, paths = _cfg(config), Paths.at(workdir)
    bundle = cfg.data.to_bundle(load_raw(cfg, paths))
    device = resolve_devices(cfg.execution.device)[0]
    model = cfg.model.build(
        input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=derive_seed(cfg.seed, STREAM_MODEL_INIT)
    ).to(device)
    layout = ParamLayout.from_module(model)
    x, y = bundle.x_train.to(device), bundle.y_train.to(device)
    x_test, y_test = bundle.x_test.to(device), bundle.y_test.to(device)
    indices = torch.arange(x.shape[0], device=device)
    b = cfg.baseline
    tracker = start_tracker(cfg, paths, role="baseline", run_name=f"{cfg.name}-centralised")
    params = layout.flatten(model)
    history = []
    for epoch in range(1, b.epochs + 1):
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, STREAM_BASELINE, epoch, 1))
            upd = local_train(
                model, client_id=0, layout=layout, global_params=params, x=x, y=y, indices=indices,
                epochs=1, batch_size=b.batch_size, lr=b.lr, momentum=cfg.client.momentum,
                weight_decay=cfg.client.weight_decay,
                generator=torch_generator(cfg.seed, STREAM_BASELINE, epoch, device=device),
            )
        params = params + upd.delta
        layout.load_into(model, params)
        ev = evaluate(model, x_test, y_test, num_classes=bundle.num_classes)
        m = {"test/accuracy": ev["accuracy"], "test/loss": ev["loss"], "train/loss": upd.metrics["train_loss"],
             "time/epoch_s": time.perf_counter() - start}
        tracker.log_metrics(m, step=epoch)
        history.append({"epoch": epoch, **m})
    result = {
        "run_id": tracker.run_id,
        "epochs": b.epochs,
        "test_accuracy": history[-1]["test/accuracy"],
        "test_loss": history[-1]["test/loss"],
        "history": history,
    }
    if bundle.sensitive_test is not None and bundle.num_classes == 2:  # group fairness beside the federated run's
        from fedops.fairness.metrics import group_fairness
        from fedops.fairness.step import predict

        fair = group_fairness(bundle.y_test.numpy(), predict(model, x_test), bundle.sensitive_test)
        tracker.log_metrics(fair, step=b.epochs)
        result["fairness"] = {k.removeprefix("fairness/"): v for k, v in fair.items()}
    write_json_atomic(result, paths.baseline)
    tracker.log_artifact(paths.baseline, "reports")
    tracker.end("FINISHED")
    return result
