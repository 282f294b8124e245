"""The federated-training flow: one Prefect task per selected client per round (mapped, retried),
server-side aggregation in the flow, everything tracked in MLflow, the final model registered."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import torch
from prefect import flow, task, unmapped
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from fedops import progress
from fedops.client.runtime import ClientRuntime, resolve_devices
from fedops.config import Config
from fedops.errors import MissingInput
from fedops.evaluation import evaluation_sums, summarize
from fedops.io import sha256_bytes, write_bytes_atomic, write_json_atomic
from fedops.paths import Paths
from fedops.rng import STREAM_MODEL_INIT, derive_seed
from fedops.server.engine import FederatedServer
from fedops.tracking import RunTracker, resolve_tracking_uri
from flows.stages import _cfg, client_raw, load_raw


@task(name="train-client", cache_policy=NONE, task_run_name="round-{round_idx}-client-{client_id}")
def train_client(runtime: ClientRuntime, round_idx: int, client_id: int, global_params: torch.Tensor,
                 dp_clip_norm: float | None = None):
    return runtime.train_and_encode(round_idx=round_idx, client_id=client_id, global_params=global_params,
                                    dp_clip_norm=dp_clip_norm)


@task(name="train-client-update", cache_policy=NONE, task_run_name="round-{round_idx}-client-{client_id}")
def train_client_update(runtime: ClientRuntime, round_idx: int, client_id: int, global_params: torch.Tensor):
    """Training only: for rounds where the simulated attack rewrites updates before encoding."""
    return runtime.train(round_idx=round_idx, client_id=client_id, global_params=global_params)


@task(name="server-root-update", cache_policy=NONE, task_run_name="round-{round_idx}-root-update")
def server_root_update(runtime: ClientRuntime, round_idx: int, global_params: torch.Tensor) -> torch.Tensor:
    """The server's own training on its clean root data set (FLTrust's reference update)."""
    return runtime.root_update(round_idx=round_idx, global_params=global_params)


@task(name="evaluate-shard", cache_policy=NONE, task_run_name="round-{round_idx}-evaluate-{lo}")
def evaluate_shard(runtime: ClientRuntime, round_idx: int, params: torch.Tensor, x, y, lo: int, hi: int):
    """Test-set evaluation of one shard, on the same worker threads as the clients so that all
    heavy tensor work shares one set of CPU threads (see ExecutionSection)."""
    runtime.use_worker_threads()
    model = runtime.thread_model(x.device)
    runtime.layout.load_into(model, params.to(x.device))
    return evaluation_sums(model, x[lo:hi], y[lo:hi], num_classes=runtime.num_classes)


def build_runtime(cfg: Config, paths: Paths) -> tuple[ClientRuntime, Any, dict[str, Any]]:
    """Data on device, partitions as index arrays, from the prepared raw data and the manifest."""
    from fedops.partition import load_manifest

    if not paths.manifest.is_file():
        raise MissingInput(f"no partition manifest at {paths.manifest}: run the partition stage first")
    partition, manifest = load_manifest(paths.manifest)
    if manifest["dataset"] != cfg.data.name or manifest["num_clients"] != cfg.partition.num_clients:
        raise MissingInput(
            f"the manifest at {paths.manifest} is for {manifest['dataset']!r} with "
            f"{manifest['num_clients']} clients, the config asks for {cfg.data.name!r} with "
            f"{cfg.partition.num_clients}: rerun the partition stage"
        )
    bundle = cfg.data.to_bundle(client_raw(cfg, load_raw(cfg, paths), list(partition.indices)))
    runtime = ClientRuntime(
        config=cfg,
        x_train=bundle.x_train,
        y_train=bundle.y_train,
        partition_indices=list(partition.indices),
        client_meta=list(partition.client_meta),
        input_shape=tuple(bundle.input_shape),
        num_classes=bundle.num_classes,
        devices=resolve_devices(cfg.execution.device),
        data_failures={c["id"]: c.get("validation_failures", ["client data validation"])
                       for c in manifest["clients"] if c.get("validation") == "failed"},
    )
    return runtime, bundle, manifest


@task(name="secure-aggregation", cache_policy=NONE, task_run_name="round-{round_idx}-secagg")
def secure_aggregation(cfg: Config, round_idx: int, received: list):
    """The round's secure aggregation (see fedops.secagg.round) as a task of its own."""
    from fedops.secagg.round import secure_round

    return secure_round(cfg, round_idx, received)


def _backdoor_accuracy(runtime: ClientRuntime, params: torch.Tensor, x, y) -> float:
    """Share of triggered test images (true label not the target) classified as the target."""
    from fedops.attacks import backdoor_accuracy

    model = runtime.thread_model(x.device)
    runtime.layout.load_into(model, params.to(x.device))
    return backdoor_accuracy(model, x, y, attack=runtime.config.simulation.attack)


def even_shards(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


def model_digest(params: torch.Tensor) -> str:
    return sha256_bytes(params.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())


def start_tracker(cfg: Config, paths: Paths, *, role: str, run_name: str) -> RunTracker:
    tracker = RunTracker(
        tracking_uri=resolve_tracking_uri(cfg.tracking.uri, paths.mlflow_dir),
        experiment=cfg.tracking.experiment or cfg.name,
        artifact_dir=paths.mlflow_dir / "artifacts",
        run_name=run_name,
        tags={"fedops.role": role, "fedops.dataset": cfg.data.name, "fedops.config": cfg.name},
    )
    tracker.log_params(cfg.flat_params())
    return tracker


def _collect(futures, selected: list[int]):
    received, reports, dropped = [], {}, {}
    for cid, fut in zip(selected, futures):
        fut.wait()
        state = fut.state
        if state.is_completed():
            msg, report = fut.result()
            received.append(msg)
            reports[cid] = report
        else:
            dropped[cid] = (state.message or state.name).replace("\n", " ")[:500]
    return received, reports, dropped


def _collect_updates(futures, selected: list[int]):
    updates, dropped = {}, {}
    for cid, fut in zip(selected, futures):
        fut.wait()
        if fut.state.is_completed():
            updates[cid] = fut.result()
        else:
            dropped[cid] = (fut.state.message or fut.state.name).replace("\n", " ")[:500]
    return updates, dropped


@flow(name="federated-training")
def federated_training(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """Run ``server.rounds`` rounds of federated training and register the final model."""
    cfg, paths = _cfg(config), Paths.at(workdir)
    runtime, bundle, _ = build_runtime(cfg, paths)
    # Heavy tensor work runs in the task runner's worker threads; the flow's own thread stays on
    # one CPU thread so that it never starts a competing OpenMP team.
    main_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, paths, runtime, bundle)
    finally:
        torch.set_num_threads(main_threads)


def _train(cfg: Config, paths: Paths, runtime: ClientRuntime, bundle) -> dict[str, Any]:
    init = runtime.new_model(seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
    server = FederatedServer(config=cfg, params=runtime.layout.flatten(init), num_clients=runtime.num_clients,
                             layout=runtime.layout, data_failures=runtime.data_failures)
    eval_device = runtime.devices[0]
    final_model = init.to(eval_device)
    x_test, y_test = bundle.x_test.to(eval_device), bundle.y_test.to(eval_device)
    shards = even_shards(x_test.shape[0], cfg.execution.max_workers)

    tracker = start_tracker(cfg, paths, role="federated", run_name=f"{cfg.name}-federated")
    sim = cfg.simulation
    if sim.attack.name != "none":  # attack runs are easy to filter: tags.`fedops.attack` != ''
        tracker.set_tags({"fedops.attack": sim.attack.name, "fedops.malicious_fraction": str(sim.malicious_fraction),
                          "fedops.malicious_clients": str(len(runtime.malicious))})
    if runtime.data_failures:
        tracker.set_tags({"fedops.bad_data_clients": ",".join(map(str, sorted(runtime.data_failures))),
                          "fedops.bad_data_policy": cfg.quality.bad_data})
    tracker.set_tags({
        "fedops.aggregator": cfg.server.aggregator.name,
        "fedops.partitioner": cfg.partition.partitioner.name,
        "fedops.devices": ",".join(str(d) for d in runtime.devices),
        "model.num_params": str(runtime.layout.size),
    })
    for artifact in (paths.manifest, paths.heatmap, paths.validation_report, paths.client_validation_report):
        if artifact.is_file():
            tracker.log_artifact(artifact, "data")

    if cfg.privacy.mode != "none":
        disclosure = server.privacy_disclosure()
        tracker.log_params({f"privacy.disclosure.{k}": v for k, v in disclosure.items()})
        tracker.log_dict(disclosure, "privacy/disclosure.json")
    stopped = None
    client_task = train_client.with_options(
        retries=cfg.execution.retries, retry_delay_seconds=cfg.execution.retry_delay_s
    )
    update_task = train_client_update.with_options(
        retries=cfg.execution.retries, retry_delay_seconds=cfg.execution.retry_delay_s
    )
    history: list[dict[str, Any]] = []
    progress.emit("start", rounds=cfg.server.rounds, run_id=tracker.run_id)
    try:
        tracking_s = 0.0
        for r in range(1, cfg.server.rounds + 1):
            stopped = server.privacy_stop_reason()
            if stopped:
                tracker.set_tags({"fedops.stopped": stopped})
                progress.emit("stopped", round=r, reason=stopped)
                break
            started = time.perf_counter()
            selected = server.select(r)
            training = [c for c in selected if not server.excluded(c)]  # bad data: not trained at all
            if runtime.crafts_updates:  # train, let the simulated attackers rewrite, then encode
                futures = update_task.map(runtime=unmapped(runtime), round_idx=unmapped(r), client_id=training,
                                          global_params=unmapped(server.params))
                updates, dropped = _collect_updates(futures, training)
                updates = runtime.craft_attacks(round_idx=r, updates=updates, global_params=server.params,
                                                num_selected=len(selected))
                received, reports = [], {}
                for cid in sorted(updates):
                    msg, reports[cid] = runtime.encode_with_report(updates[cid], round_idx=r,
                                                                   dp_clip_norm=server.client_dp_clip_norm())
                    received.append(msg)
            else:
                futures = client_task.map(
                    runtime=unmapped(runtime), round_idx=unmapped(r), client_id=training,
                    global_params=unmapped(server.params), dp_clip_norm=unmapped(server.client_dp_clip_norm()),
                )
                received, reports, dropped = _collect(futures, training)
            t_clients = time.perf_counter()
            if cfg.secagg.enabled:
                result = secure_aggregation.submit(cfg, r, received).result()
                outcome = server.finish_secure_round(
                    r, selected=selected, result=result, reports=reports, dropped=dropped, started=started
                )
            else:
                reference = (server_root_update.submit(runtime, r, server.params).result()
                             if runtime.root_indices is not None else None)
                outcome = server.finish_round(r, selected=selected, received=received, reports=reports,
                                              dropped=dropped, started=started, reference=reference)
            t_server = time.perf_counter()
            metrics = dict(outcome.metrics)
            if r % cfg.server.eval_every == 0 or r == cfg.server.rounds:
                ev = summarize([f.result() for f in evaluate_shard.map(
                    runtime=unmapped(runtime), round_idx=unmapped(r), params=unmapped(server.params),
                    x=unmapped(x_test), y=unmapped(y_test), lo=[b[0] for b in shards], hi=[b[1] for b in shards],
                )])
                metrics["test/accuracy"], metrics["test/loss"] = ev["accuracy"], ev["loss"]
                if cfg.simulation.attack.name == "backdoor":
                    metrics["test/backdoor_accuracy"] = _backdoor_accuracy(runtime, server.params, x_test, y_test)
            done = time.perf_counter()
            metrics.update({
                "time/round_s": done - started,
                "time/clients_s": t_clients - started,
                "time/server_s": t_server - t_clients,
                "time/eval_s": done - t_server,
                "time/tracking_prev_round_s": tracking_s,
            })
            tracker.log_metrics(metrics, step=r)
            tracker.log_client_table(outcome.client_table, step=r)
            tracking_s = time.perf_counter() - done
            history.append({"round": r, **metrics})
            progress.emit("round", round=r, rounds=cfg.server.rounds, metrics=metrics)
    except BaseException as exc:
        tracker.set_tags({"fedops.failure": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker.end("FAILED")
        progress.emit("end", ok=False)
        raise

    runtime.layout.load_into(final_model, server.params.to(eval_device))
    digest = model_digest(server.params)
    buf = io.BytesIO()
    torch.save({"state_dict": final_model.state_dict(), "params_sha256": digest}, buf)
    write_bytes_atomic(buf.getvalue(), paths.model)
    _write_rounds_csv(history, paths)
    registered = None
    if cfg.tracking.register_model:
        registered = tracker.log_model(
            final_model, name="model", registered_model_name=cfg.tracking.model_name or cfg.name, alias="current"
        )
    final = history[-1] if history else {}
    summary = {
        "run_id": tracker.run_id,
        "experiment_id": tracker.experiment_id,
        "tracking_uri": tracker.tracking_uri,
        "rounds": len(history),
        "stopped": stopped,
        "privacy_epsilon": final.get("privacy/epsilon"),
        "final_test_accuracy": final.get("test/accuracy"),
        "final_test_loss": final.get("test/loss"),
        "comm_bytes_up_total": server.bytes_up_total,
        "comm_bytes_down_total": server.bytes_down_total,
        "model_params_sha256": digest,
        "registered_model": cfg.tracking.model_name or cfg.name if registered else None,
        "registered_version": registered,
        "num_params": runtime.layout.size,
    }
    tracker.set_tags({"model.params_sha256": digest})
    tracker.log_artifact(paths.rounds_csv, "reports")
    tracker.end("FINISHED")
    write_json_atomic(summary, paths.train_summary)
    progress.emit("end", ok=True, summary=summary)
    return summary


def _write_rounds_csv(history: list[dict[str, Any]], paths: Paths) -> None:
    cols = ["round", "test/accuracy", "test/loss", "train/loss", "clients/aggregated", "comm/bytes_up", "time/round_s"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.replace("/", "_") for c in cols])
    for row in history:
        w.writerow([row.get(c, "") for c in cols])
    write_bytes_atomic(buf.getvalue().encode(), paths.rounds_csv)


def run_federated_training(cfg: Config, workdir: str = ".") -> dict[str, Any]:
    """Run the flow with a thread-pool task runner sized by ``execution.max_workers``."""
    runner = ThreadPoolTaskRunner(max_workers=cfg.execution.max_workers)
    return federated_training.with_options(task_runner=runner)(cfg.to_params(), workdir)
