"""A whole market round on one machine: one requester, N simulated owners. The owners' side is
the same client code a remote owner runs (:class:`~fedops.market.client.MarketClient`): each
prepares its partition's fingerprint locally and sends only that."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

DEMO_CONFIG: dict[str, Any] = {
    "name": "market-pima",
    "seed": 0,
    "data": {"name": "pima", "test_fraction": 0.2, "split_seed": 0},
    "partition": {"num_clients": 5, "name": "iid"},
    "model": {"name": "mlp", "hidden": []},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
    "server": {"rounds": 10, "fraction": 1.0},
}
"""CrowdFL's Pima task: logistic regression, owners holding IID shares of the training split."""


def demo_config(*, owners: int, rounds: int) -> dict[str, Any]:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["partition"]["num_clients"] = owners
    cfg["server"]["rounds"] = rounds
    return cfg


def demo_task(config: dict[str, Any], *, min_owners: int) -> dict[str, Any]:
    return {
        "title": "Diabetes risk (Pima), logistic regression",
        "description": "Predict diabetes from 8 clinical measurements. Owners keep their rows; only model updates "
                       "leave their side.",
        "requirements": {"dataset": "pima", "columns": ["glucose", "mass", "age"], "labels": ["neg", "pos"],
                         "min_samples": 50, "validated": True},
        "device": {"min_cpu_cores": 1, "min_ram_mb": 1000},
        "min_owners": min_owners, "max_owners": config["partition"]["num_clients"],
        "reward_budget": 100.0, "initial_model": "mlp", "config": config,
    }


def devices(n: int) -> list[dict[str, Any]]:
    """Owners' devices; the last has 512 MB of RAM, below the demo task's 1000 MB."""
    out = [{"cpu_cores": 2 + i % 3, "ram_mb": 2000 + 500 * i, "storage_mb": 16000, "bandwidth_mbps": 10 + 5 * i,
            "speed": 1.0 + 0.25 * (i % 2)} for i in range(n)]
    out[-1] = {**out[-1], "ram_mb": 512}
    return out


def run_demo(*, url: str, owners: int, rounds: int, data_dir: Path, say: Callable[[str], None] = print,
             wait_s: float = 0) -> dict[str, Any]:
    from fedops.config import parse_config
    from fedops.market.client import MarketClient, MarketClientError
    from fedops.market.owner import fingerprints, prepare

    MarketClient(url).tasks()  # a service answers there (else a clear error before any preparation)
    config = demo_config(owners=owners, rounds=rounds)
    cfg = parse_config(config)
    say(f"preparing the owners' data set in {data_dir} (pima, {owners} partitions) ...")
    prepare(cfg, Path(data_dir))
    prints = fingerprints(cfg, Path(data_dir), name="pima")
    requester = MarketClient.register(url, role="requester", name="Clinic research group")
    task = requester.publish(demo_task(config, min_owners=owners - 1))
    say(f"published task {task['id']}: {task['title']}")
    result: dict[str, Any] = {"task": task["id"], "requester_token": requester.token, "owners": []}
    for i, (device, fp) in enumerate(zip(devices(owners), prints)):
        owner = MarketClient.register(url, role="owner", name=f"Owner {i + 1}", device=device)
        ds = owner.add_dataset(fp)
        entry = {"name": f"Owner {i + 1}", "token": owner.token, "dataset": ds["id"]}
        check = owner.eligibility(task["id"])
        if not check["eligible"]:
            entry["refused"] = check["reasons"]
            say(f"Owner {i + 1}: not eligible: {'; '.join(check['reasons'])}")
        else:
            try:
                joined = owner.join(task["id"], ds["id"])
                entry["training_id"] = joined["training_id"]
                say(f"Owner {i + 1}: joined with training ID {joined['training_id']}")
            except MarketClientError as exc:
                entry["refused"] = [str(exc.detail)]
                say(f"Owner {i + 1}: refused: {exc.detail}")
        result["owners"].append(entry)
    base = url.rstrip("/")
    result["links"] = {"tasks": f"{base}/", "task": f"{base}/tasks/{task['id']}",
                       "statistics": f"{base}/tasks/{task['id']}/stats", "login": f"{base}/login",
                       "api": f"{base}/docs"}
    say(f"the task starts when {owners - 1} owners have joined; watch it at {result['links']['statistics']} "
        "(log in with the requester token below)")
    deadline = time.time() + wait_s
    while wait_s and time.time() < deadline:
        stats = requester.statistics(task["id"])
        if stats.get("model"):
            break
        time.sleep(2)
    return result
