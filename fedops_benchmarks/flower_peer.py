"""The engine benchmark's peer: the same W2 rounds in Flower's simulation engine (flwr on Ray).

It runs in Flower's own environment (``scripts/flower-env.sh`` makes ``.flower-venv``) and imports
nothing of fedops: :func:`export` (run in the project's environment) writes what both sides share:
the training and test arrays (as fedops normalises them), every client's rows, each model's
initial weights, each round's selected clients and each (round, client)'s generator seed. Flower's
server then sends each round's selected clients the model with their partition id, each client
runs the same minibatches of plain SGD as fedops and the bare loop, and FedAvg weighs by samples;
the server evaluates on the test set after the last round. Per-round wall-clock ends and the
process tree's peak RSS (sampled) are printed as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".flower-venv"
MAX_ROUNDS = 100


# --- the project's side ---------------------------------------------------------------------
def python() -> str | None:
    """Flower's interpreter, when its environment exists."""
    exe = VENV / "bin" / "python"
    return str(exe) if exe.exists() else None


def export(cfg: Any, workdir: Path) -> Path:
    """Write the shared arrays under ``workdir/flower`` (once per partition)."""
    import numpy as np
    import torch

    from fedops.partition import load_manifest
    from fedops.rng import STREAM_CLIENT, STREAM_MODEL_INIT, STREAM_SELECTION, derive_seed, numpy_rng
    from fedops_benchmarks.engine import MODELS

    out = workdir / "flower"
    out.mkdir(exist_ok=True)
    manifest = workdir / "data" / "partitions" / "manifest.json"
    stamp = out / "manifest.json"
    if stamp.exists() and stamp.read_bytes() == manifest.read_bytes():
        return out
    raw = cfg.data.load_raw(workdir / "data" / "raw" / cfg.data.name)
    bundle = cfg.data.to_bundle(raw)
    part, _ = load_manifest(manifest)
    np.save(out / "x_train.npy", bundle.x_train.numpy())
    np.save(out / "y_train.npy", bundle.y_train.numpy())
    np.save(out / "x_test.npy", bundle.x_test.numpy())
    np.save(out / "y_test.npy", bundle.y_test.numpy())
    sizes = [len(ix) for ix in part.indices]
    np.save(out / "rows.npy", np.concatenate([np.asarray(ix, dtype=np.int64) for ix in part.indices]))
    np.save(out / "offsets.npy", np.cumsum([0] + sizes))
    k, per_round = len(sizes), max(1, round(cfg.server.fraction * len(sizes)))
    selection = {r: sorted(int(c) for c in numpy_rng(cfg.seed, STREAM_SELECTION, r).choice(k, size=per_round,
                                                                                           replace=False))
                 for r in range(1, MAX_ROUNDS + 1)}
    seeds = {f"{r},{c}": derive_seed(cfg.seed, STREAM_CLIENT, r, c) for r, cs in selection.items() for c in cs}
    from fedops.config import parse_config

    for name, spec in MODELS.items():
        model_cfg = parse_config({**cfg.to_params(), "model": spec}).model
        net = model_cfg.build(input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                              seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
        np.savez(out / f"init_{name}.npz", *[v.numpy() for v in net.state_dict().values()])
    (out / "plan.json").write_text(json.dumps({
        "selection": selection, "seeds": seeds, "lr": cfg.client.lr, "batch_size": cfg.client.batch_size,
        "epochs": cfg.client.epochs, "num_clients": k}))
    stamp.write_bytes(manifest.read_bytes())
    return out


# --- Flower's side (imports only torch, numpy and flwr) ----------------------------------------
def _net(name: str):
    from torch import nn

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                             nn.Linear(200, 10))
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


_DATA: dict[str, Any] = {}


def _data() -> dict[str, Any]:
    """The shared arrays, memory-mapped once per process (each Ray actor)."""
    if not _DATA:
        import numpy as np
        import torch

        torch.set_num_threads(1)
        d = Path(os.environ["FLOWER_PEER_DIR"])
        _DATA.update(x=torch.from_numpy(np.load(d / "x_train.npy")), y=torch.from_numpy(np.load(d / "y_train.npy")),
                     rows=np.load(d / "rows.npy"), offsets=np.load(d / "offsets.npy"),
                     plan=json.loads((d / "plan.json").read_text()), model=_net(os.environ["FLOWER_PEER_MODEL"]))
    return _DATA


def client_fn(context):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from flwr.client import NumPyClient

    class PeerClient(NumPyClient):
        def fit(self, parameters, config):
            d = _data()
            pid, r = int(config["partition"]), int(config["round"])
            model, x, y, plan = d["model"], d["x"], d["y"], d["plan"]
            model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                                   zip(model.state_dict().keys(), parameters)})
            opt = torch.optim.SGD(model.parameters(), lr=plan["lr"])
            gen = torch.Generator().manual_seed(plan["seeds"][f"{r},{pid}"])
            ix = torch.from_numpy(d["rows"][d["offsets"][pid]:d["offsets"][pid + 1]])
            n, bs = ix.numel(), plan["batch_size"]
            for _ in range(plan["epochs"]):
                order = ix[torch.randperm(n, generator=gen)]
                for b in range(0, n, bs):
                    bi = order[b:b + bs]
                    loss = F.cross_entropy(model(x[bi]), y[bi])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            return [v.detach().numpy().copy() for v in model.state_dict().values()], n, {}

    return PeerClient().to_client()


def _tree_pids() -> list[int]:
    """This process and every live descendant (Ray's raylet, GCS, actors; Prefect's API server)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_rss_mb() -> float:
    """The process tree's resident memory (MB)."""
    total = 0
    for pid in _tree_pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def own_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def tree_cpu_s() -> float:
    """CPU seconds (user + system) spent so far by this process, its reaped children, and every
    live descendant with its own reaped children: the difference over a span is the span's CPU."""
    total = own_cpu_s()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _tree_pids()[1:]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _rss_sampler(stop: threading.Event, peak: list[float]) -> None:
    """Keeps ``peak[0]`` at the largest process-tree RSS seen, sampled every 0.5 s."""
    while not stop.wait(0.5):
        peak[0] = max(peak[0], tree_rss_mb())


def main(model: str, rounds: int, workdir: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from flwr.client import ClientApp
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    d = workdir / "flower"
    os.environ["FLOWER_PEER_DIR"], os.environ["FLOWER_PEER_MODEL"] = str(d), model
    plan = json.loads((d / "plan.json").read_text())
    init = np.load(d / f"init_{model}.npz")
    initial = [init[f"arr_{i}"] for i in range(len(init.files))]
    x_test, y_test = torch.from_numpy(np.load(d / "x_test.npy")), torch.from_numpy(np.load(d / "y_test.npy"))
    ends: list[float] = []
    result: dict[str, Any] = {}

    def evaluate_fn(server_round, ndarrays, config):
        if server_round != rounds:
            return None
        net = _net(model)
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in zip(net.state_dict().keys(), ndarrays)})
        net.eval()
        with torch.inference_mode():
            correct = sum(int((net(x_test[i:i + 512]).argmax(1) == y_test[i:i + 512]).sum())
                          for i in range(0, x_test.shape[0], 512))
        result["test_accuracy"] = correct / x_test.shape[0]
        result["params"] = ndarrays
        return 0.0, {"accuracy": result["test_accuracy"]}

    class Pinned(FedAvg):
        """FedAvg whose round r trains exactly fedops' selected clients (partition ids sent in the
        fit config to distinct simulated nodes)."""

        def configure_fit(self, server_round, parameters, client_manager):
            chosen = plan["selection"][str(server_round)]
            proxies = client_manager.sample(num_clients=len(chosen), min_num_clients=len(chosen))
            return [(p, FitIns(parameters, {"partition": int(c), "round": server_round}))
                    for p, c in zip(proxies, chosen)]

        def evaluate(self, server_round, parameters):
            out = super().evaluate(server_round, parameters)
            ends.append(time.time())
            return out

    strategy = Pinned(fraction_fit=1.0, fraction_evaluate=0.0, min_available_clients=plan["num_clients"],
                      initial_parameters=ndarrays_to_parameters(initial), evaluate_fn=evaluate_fn)
    server_app = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy,
                                                                         config=ServerConfig(num_rounds=rounds)))
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=_rss_sampler, args=(stop, peak), daemon=True)
    sampler.start()
    torch.set_num_threads(1)
    run_simulation(server_app=server_app, client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=plan["num_clients"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}})
    stop.set()
    params = np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in result.get("params", [])]) \
        if result.get("params") else np.zeros(0)
    np.save(d / f"final_{model}.npy", params)
    return {"side": "flower", "model": model, "round_ends": ends[1:] if len(ends) > rounds else ends,
            "test_accuracy": result.get("test_accuracy"), "peak_rss_mb": peak[0], "cpu_s": own_cpu_s()}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # Ray's workers import this module by name
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                              os.environ.get("PYTHONPATH")]))
    import flower_peer  # noqa: E402  (the ClientApp from an importable module, not __main__)

    print(json.dumps(flower_peer.main(a.model, a.rounds, a.workdir)))
