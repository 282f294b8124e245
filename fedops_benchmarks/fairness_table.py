"""Fairness tables (README): FedAvg, FairFed and q-FFL on UCI Adult (sex) and COMPAS (race), and
q-FFL against FedAvg on Fashion-MNIST with 100 clients.

Tables 1-2: 5 clients, the sensitive attribute skewed across clients by Dirichlet(alpha)
(:mod:`fedops.partition.sensitive_dirichlet`), alpha in {0.1, 0.5, 5000}, logistic regression and an
MLP, FedAvg / FairFed beta in {0.5, 1} (EOD; with local reweighing as its authors run it, and
without) / q-FFL, seeds 0-2 (a seed changes the partition,
the held-out splits, the initial model and the batches). Each client keeps 20% of its rows
held out; the final global model is evaluated on the test set (accuracy, |EOD|, |SPD| by group)
and on every client's held-out rows (accuracy std, worst 10%). Beside each block: the same model
trained centrally on the union of the clients' training rows, for rounds x fraction x local
epochs epochs (the same passes over the data).

Table 3: Fashion-MNIST, 100 clients with Dirichlet(0.3) label skew, 10 per round, an MLP:
FedAvg and q-FFL at q in {0.1, 1, 5}, seeds 0-2, with q-FedAvg's Lipschitz estimate ``L`` at the
authors' default ``1 / lr`` and at a value chosen first on a tuning seed that is not reported
(seed 10: the ``L`` whose q-FFL run has the best worst-10% accuracy within 1 point of FedAvg's mean
accuracy, over q in {1, 5} and L in {0.5, 1, 2, 1 / lr}).

Every run is fedops' round (:func:`fedops.simulation.simulate`, sequential executor, one CPU
thread) in worker processes; only the final round is evaluated.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fedops_benchmarks.readme import replace_block

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"adult": ROOT / "configs" / "adult.yaml", "compas": ROOT / "configs" / "compas.yaml",
           "fmnist": ROOT / "configs" / "qffl_fmnist.yaml"}
ALPHAS = (0.1, 0.5, 5000.0)
MODELS = {"logistic": {"name": "mlp", "hidden": []}, "MLP": {"name": "mlp", "hidden": [32]}}
FAIRFED = {"name": "fairfed", "beta": 1.0, "metric": "eod"}
FAIRFED_HALF = {"name": "fairfed", "beta": 0.5, "metric": "eod"}
METHODS: list[tuple[str, Any, str]] = [
    ("FedAvg", "fedavg", "none"),
    ("FedAvg + local reweighing", "fedavg", "local"),
    ("FedAvg + FairBatch", "fedavg", "fairbatch"),
    ("FairFed β=0.5 + local reweighing", FAIRFED_HALF, "local"),
    ("FairFed β=1 + local reweighing", FAIRFED, "local"),
    ("FairFed β=0.5 + FairBatch", FAIRFED_HALF, "fairbatch"),
    ("FairFed β=1 + FairBatch", FAIRFED, "fairbatch"),
    ("FairFed β=1 (weights only)", FAIRFED, "none"),
    ("q-FFL q=1", {"name": "qffl", "q": 1.0}, "none"),
]
"""FairFed as its authors run it, with local debiasing on every client: Kamiran & Calders'
reweighing (aimed at demographic parity) or FairBatch (aimed at equal opportunity, the gap that
FairFed's EOD measures); the FedAvg rows with the same local step and FairFed without one show
what each part contributes."""
LOCAL_STEP = {"none": "FedAvg", "local": "FedAvg + local reweighing", "fairbatch": "FedAvg + FairBatch"}
"""The FedAvg row with the same local training as a FairFed row (FairFed's weights are the only
difference)."""
FAIRFED_ROWS = tuple(label for label, agg, _ in METHODS if isinstance(agg, dict) and agg["name"] == "fairfed")
QFFL_QS = (0.1, 1.0, 5.0)
TUNE_SEED = 10
"""The seed on which q-FedAvg's ``L`` is chosen; it is not one of the reported seeds."""
TUNE_QS = (1.0, 5.0)
TUNE_LS: tuple[float | None, ...] = (0.5, 1.0, 2.0, None)
"""Candidate Lipschitz estimates; ``None`` is the authors' default, ``1 / client.lr``."""
SEEDS = (0, 1, 2)


def _qffl_label(q: float, lipschitz: float | None) -> str:
    return f"q-FFL q={q:g}" + ("" if lipschitz is None else f", L={lipschitz:g}")


def _qffl(q: float, lipschitz: float | None) -> tuple[str, Any, str]:
    return (_qffl_label(q, lipschitz), {"name": "qffl", "q": q, "lipschitz": lipschitz}, "none")


def qffl_methods(lipschitz: float | None) -> list[tuple[str, Any, str]]:
    """FedAvg, q-FFL at ``QFFL_QS`` with ``L = 1 / lr`` and, when ``lipschitz`` is given, with it."""
    out = [("FedAvg", "fedavg", "none")] + [_qffl(q, None) for q in QFFL_QS]
    if lipschitz is not None:
        out += [_qffl(q, lipschitz) for q in QFFL_QS]
    return out


QFFL_METHODS = qffl_methods(None)
BEGIN = {"adult": "<!-- fairness-adult:begin -->", "compas": "<!-- fairness-compas:begin -->",
         "fmnist": "<!-- fairness-qffl:begin -->"}
END = {k: v.replace(":begin", ":end") for k, v in BEGIN.items()}
_CACHE: dict[Any, Any] = {}


def _raw_dir(dataset: str) -> Path:
    return ROOT / ".cache" / "bench" / "fairness" / "raw" / dataset


def _config(dataset: str, *, seed: int, alpha: float | None, model: dict | None, aggregator: Any,
            rounds: int | None, reweighing: str = "none"):
    from fedops.config import load_config

    over: dict[str, Any] = {"seed": seed, "server.aggregator": aggregator, "fairness.checks": {},
                            "client.reweighing": reweighing,
                            "execution.max_workers": 1, "execution.torch_threads": 1, "execution.device": "cpu"}
    if alpha is not None:
        over["partition.alpha"] = alpha
    if model is not None:
        over["model"] = model
    if rounds is not None:
        over["server.rounds"] = rounds
    return load_config(CONFIGS[dataset], over)


def _bundle(cfg):
    key = ("bundle", cfg.data.name)
    if key not in _CACHE:
        _CACHE[key] = cfg.data.to_bundle(cfg.data.load_raw(_raw_dir(cfg.data.name)))
    return _CACHE[key]


def world_for(cfg):
    """The in-memory world of ``cfg`` (the partition stage's split, without Prefect)."""
    from fedops.partition import partition_labels
    from fedops.round.world import world_from_bundle
    from flows.stages import partition_groups

    bundle = _bundle(cfg)
    part = partition_labels(cfg.partition.partitioner, bundle.y_train.numpy(), num_clients=cfg.partition.num_clients,
                            seed=cfg.seed, groups=partition_groups(cfg, bundle))
    return world_from_bundle(cfg, bundle, partition_indices=list(part.indices), client_meta=list(part.client_meta))


def _final(metrics: dict[str, float]) -> dict[str, float]:
    return {"accuracy": metrics["test/accuracy"], "eod": abs(metrics.get("fairness/eod", float("nan"))),
            "spd": abs(metrics.get("fairness/spd", float("nan"))),
            "client_std": metrics["fairness/client_acc_std"], "worst10": metrics["fairness/client_acc_worst10"],
            "client_mean": metrics["fairness/client_acc_mean"]}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fedops.simulation import simulate

    torch.set_num_threads(1)
    central = job["aggregator"] == "centralised"
    cfg = _config(job["dataset"], seed=job["seed"], alpha=job.get("alpha"), model=job.get("model"),
                  aggregator="fedavg" if central else job["aggregator"], rounds=job.get("rounds"),
                  reweighing=job.get("reweighing", "none"))
    if central:
        return {**job, **centralised(cfg)}
    world = world_for(cfg)
    start = time.perf_counter()
    res = simulate(world, cfg, evaluate_last=1)
    return {**job, **_final(res.history[-1]), "seconds": time.perf_counter() - start}


def centralised(cfg) -> dict[str, float]:
    """The model trained on the union of the clients' training rows (not their held-out rows) for
    ``rounds x fraction`` epochs (as many passes over the data as the federated run's local
    epochs make), evaluated as the federated model is."""
    import torch

    from fedops.client.local import local_train
    from fedops.evaluation import evaluate
    from fedops.fairness.step import FairnessStep
    from fedops.rng import STREAM_BASELINE, STREAM_MODEL_INIT, derive_seed, torch_generator

    world = world_for(cfg)
    rt = world.runtime
    model = rt.new_model(seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
    params = rt.layout.flatten(model)
    rows = torch.as_tensor(sorted(int(i) for ix in rt.partition_indices for i in ix))
    start = time.perf_counter()
    epochs = max(1, round(cfg.server.rounds * cfg.server.fraction * cfg.client.epochs))
    for epoch in range(1, epochs + 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, STREAM_BASELINE, epoch, 1))
            upd = local_train(model, client_id=0, layout=rt.layout, global_params=params, x=rt.x_train, y=rt.y_train,
                              indices=rows, epochs=1, batch_size=cfg.client.batch_size, lr=cfg.client.lr,
                              generator=torch_generator(cfg.seed, STREAM_BASELINE, epoch))
        params = params + upd.delta
    rt.layout.load_into(model, params)
    metrics = {"test/accuracy": evaluate(model, world.testset.x, world.testset.y, num_classes=rt.num_classes)["accuracy"]}
    metrics.update(FairnessStep(world)(model, x_train=rt.x_train, x_test=world.testset.x, y_test=world.testset.y).metrics)
    return {**_final(metrics), "seconds": time.perf_counter() - start}


def tuning_jobs(*, rounds: int | None = None) -> list[dict[str, Any]]:
    """Seed ``TUNE_SEED``: FedAvg and q-FFL at every (q, L) candidate."""
    methods = [("FedAvg", "fedavg", "none")] + [_qffl(q, lip) for q in TUNE_QS for lip in TUNE_LS]
    return [{"dataset": "fmnist", "method": label, "aggregator": agg, "reweighing": rw, "seed": TUNE_SEED,
             "rounds": rounds, "lipschitz": agg["lipschitz"] if isinstance(agg, dict) else None}
            for label, agg, rw in methods]


def choose_lipschitz(rows: list[dict[str, Any]]) -> tuple[float | None, list[str]]:
    """The tuning seed's choice: the ``L`` of the q-FFL run with the best worst-10% accuracy among
    those within 1 point of FedAvg's test accuracy (the first such run on a tie), and a log of it."""
    base = next(r for r in rows if r["method"] == "FedAvg")
    runs = [r for r in rows if r["method"] != "FedAvg"]
    ok = [r for r in runs if r["accuracy"] >= base["accuracy"] - 0.01]
    best = max(ok, key=lambda r: r["worst10"]) if ok else None
    log = [f"{r['method'] if r['lipschitz'] is not None else r['method'] + ', L=1/lr'}: accuracy "
           f"{(r['accuracy'] - base['accuracy']) * 100:+.1f} points, worst-10% "
           f"{(r['worst10'] - base['worst10']) * 100:+.1f} points" for r in runs]
    if best is None:
        log.append("no candidate within 1 point of FedAvg's accuracy: L = 1 / lr kept")
    return (best["lipschitz"] if best else None), log


def jobs(*, rounds: int | None = None, seeds=SEEDS, datasets=("adult", "compas", "fmnist"),
         lipschitz: float | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for dataset in datasets:
        if dataset == "fmnist":
            for label, agg, rw in [*qffl_methods(lipschitz), ("centralised", "centralised", "none")]:
                out += [{"dataset": dataset, "method": label, "aggregator": agg, "reweighing": rw, "seed": s,
                         "rounds": rounds} for s in seeds]
            continue
        for alpha in ALPHAS:
            for mname, model in MODELS.items():
                for label, agg, rw in [*METHODS, ("centralised", "centralised", "none")]:
                    out += [{"dataset": dataset, "alpha": alpha, "model_name": mname, "model": model, "method": label,
                             "aggregator": agg, "reweighing": rw, "seed": s, "rounds": rounds} for s in seeds]
    return out


def main(*, rounds: int | None = None, processes: int = 2, datasets=("adult", "compas", "fmnist"),
         readme: Path | None = ROOT / "README.md", log=print) -> list[dict[str, Any]]:
    from fedops.config import load_config

    start = time.perf_counter()
    for dataset in datasets:
        cfg = load_config(CONFIGS[dataset])
        if not (_raw_dir(cfg.data.name) / "hashes.json").is_file():
            cfg.data.prepare(raw_dir=_raw_dir(cfg.data.name), project_dir=ROOT)
    lipschitz, tuning, rows, tuning_rows = None, None, [], []
    with ProcessPoolExecutor(max_workers=processes) as pool:
        if "fmnist" in datasets:
            log(f"choosing q-FedAvg's L on seed {TUNE_SEED}")
            tuning_rows = list(pool.map(run_one, tuning_jobs(rounds=rounds)))
            lipschitz, tuning = choose_lipschitz(tuning_rows)
            log("\n".join(f"  {t}" for t in tuning) + f"\n  chosen: L = {lipschitz}")
        todo = jobs(rounds=rounds, datasets=datasets, lipschitz=lipschitz)
        # the slowest jobs first, so the pool's last minutes are not one long run
        todo.sort(key=lambda j: (j["dataset"] != "fmnist", j["dataset"] != "adult"))
        log(f"{len(todo)} runs on {processes} processes")
        for r in pool.map(run_one, todo):
            rows.append(r)
            where = f"alpha {r['alpha']:g} {r['model_name']}" if "alpha" in r else ""
            log(f"  {r['dataset']} {where} {r['method']} seed {r['seed']}: accuracy {r['accuracy']:.4f} "
                f"|EOD| {r['eod']:.4f} worst10 {r['worst10']:.4f} ({r['seconds']:.0f} s; "
                f"{time.perf_counter() - start:.0f} s so far)")
    minutes = (time.perf_counter() - start) / 60
    if readme is not None:
        write_readme(rows, readme=readme, minutes=minutes, processes=processes, lipschitz=lipschitz, tuning=tuning,
                     extra_runs=len(tuning_rows))
    return rows


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = [x * scale for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.{digits}f} ± {sd:.{digits}f}"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per block (dataset, alpha, model), per method: the seeds' values; and the targets."""
    blocks: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        key = (r["dataset"], r.get("alpha"), r.get("model_name"))
        blocks.setdefault(key, {}).setdefault(r["method"], []).append(r)
    for methods in blocks.values():
        for runs in methods.values():
            runs.sort(key=lambda r: r["seed"])
    return blocks


def _eod_change(ff, base) -> tuple[int, list[float], float]:
    lower = sum(f["eod"] < b["eod"] for f, b in zip(ff, base))
    deod = [(f["eod"] - b["eod"]) * 100 for f, b in zip(ff, base)]
    dacc = (statistics.mean(f["accuracy"] for f in ff) - statistics.mean(b["accuracy"] for b in base)) * 100
    return lower, deod, dacc


def _noise(ff, base) -> float:
    """The seeds' spread of |EOD| (the larger standard deviation of the two rows), in points."""
    return max(statistics.stdev([r["eod"] * 100 for r in rows]) if len(rows) > 1 else 0.0 for rows in (ff, base))


def targets(blocks: dict[tuple, dict[str, list[dict[str, Any]]]], dataset: str) -> list[str]:
    """The issue's targets, checked seed by seed: every FairFed row against plain FedAvg and
    against FedAvg with the same local step."""
    out = []
    for (ds, alpha, model), methods in sorted(blocks.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0, str(kv[0][2]))):
        if ds != dataset or alpha is None:
            continue
        for label in FAIRFED_ROWS:
            ff = methods.get(label, [])
            rw = next(r for lab, _, r in METHODS if lab == label)
            for base_label in dict.fromkeys(["FedAvg", LOCAL_STEP[rw]]):
                base = methods.get(base_label, [])
                if not ff or len(ff) != len(base):
                    continue
                lower, deod, dacc = _eod_change(ff, base)
                within = abs(statistics.mean(deod)) <= _noise(ff, base)
                out.append(f"α = {alpha:g}, {model}, {label} vs {base_label}: |EOD| below in {lower}/{len(base)} seeds "
                           f"(change {statistics.mean(deod):+.1f} points, per seed {', '.join(f'{d:+.1f}' for d in deod)}; "
                           f"{'within' if within else 'outside'} the seeds' spread of {_noise(ff, base):.1f}); "
                           f"mean accuracy {dacc:+.2f} points")
    return out


def _table(blocks, dataset: str) -> list[str]:
    lines = ["| α | model | method | accuracy % | \\|EOD\\| % | \\|SPD\\| % | client acc std % | worst-10% acc % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (ds, alpha, model), methods in sorted(blocks.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0, str(kv[0][2]))):
        if ds != dataset:
            continue
        for label in [m[0] for m in METHODS] + ["centralised"]:
            runs = methods.get(label)
            if not runs:
                continue
            lines.append(f"| {alpha:g} | {model} | {label} | {_ms([r['accuracy'] for r in runs])} | "
                         f"{_ms([r['eod'] for r in runs])} | {_ms([r['spd'] for r in runs])} | "
                         f"{_ms([r['client_std'] for r in runs])} | {_ms([r['worst10'] for r in runs])} |")
    return lines


def _qffl_table(blocks, lipschitz: float | None = None) -> list[str]:
    methods = blocks.get(("fmnist", None, None), {})
    lines = ["| method | test accuracy % | client acc mean % | client acc std % | worst-10% acc % | worst-10% vs FedAvg (per seed) |",
             "| --- | --- | --- | --- | --- | --- |"]
    base = methods.get("FedAvg", [])
    for label in [m[0] for m in qffl_methods(lipschitz)] + ["centralised"]:
        runs = methods.get(label)
        if not runs:
            continue
        per_seed = ", ".join(f"{(r['worst10'] - b['worst10']) * 100:+.1f}" for r, b in zip(runs, base)) \
            if label != "FedAvg" and len(runs) == len(base) else "—"
        lines.append(f"| {label} | {_ms([r['accuracy'] for r in runs])} | {_ms([r['client_mean'] for r in runs])} | "
                     f"{_ms([r['client_std'] for r in runs])} | {_ms([r['worst10'] for r in runs])} | {per_seed} |")
    return lines


def qffl_targets(blocks, lipschitz: float | None = None) -> list[str]:
    """The issue's q-FFL target per q row: worst-10% change (mean, per seed) and accuracy change."""
    methods = blocks.get(("fmnist", None, None), {})
    base = methods.get("FedAvg", [])
    out = []
    for label, _, _ in qffl_methods(lipschitz)[1:]:
        runs = methods.get(label, [])
        if not runs or len(runs) != len(base):
            continue
        dw = [(r["worst10"] - b["worst10"]) * 100 for r, b in zip(runs, base)]
        dacc = (statistics.mean(r["accuracy"] for r in runs) - statistics.mean(b["accuracy"] for b in base)) * 100
        met = statistics.mean(dw) >= 3.0 and dacc >= -1.0
        out.append(f"{label}: worst-10% {statistics.mean(dw):+.1f} points (per seed {', '.join(f'{d:+.1f}' for d in dw)}), "
                   f"mean test accuracy {dacc:+.1f} points: {'meets' if met else 'misses'} the target "
                   f"(≥ +3 points at ≤ 1 point of accuracy)")
    return out


def write_readme(rows: list[dict[str, Any]], *, readme: Path, minutes: float, processes: int,
                 lipschitz: float | None = None, tuning: list[str] | None = None, extra_runs: int = 0) -> None:
    blocks = summarise(rows)
    which = sorted({r["dataset"] for r in rows})
    note = (f"_Regenerated by `fedops bench fairness --dataset {' --dataset '.join(which)}` ({len(rows) + extra_runs} runs, "
            f"{minutes:.0f} min on {processes} worker processes of 1 CPU thread each, on this project's 2-core "
            f"machine); mean ± standard deviation over seeds {', '.join(map(str, SEEDS))}._")
    for dataset in ("adult", "compas"):
        if any(r["dataset"] == dataset for r in rows):
            lines = [note, "", *_table(blocks, dataset), "", "Targets, seed by seed:", ""]
            lines += [f"- {t}" for t in targets(blocks, dataset)]
            replace_block(readme, begin=BEGIN[dataset], end=END[dataset], lines=lines)
    if any(r["dataset"] == "fmnist" for r in rows):
        lines = [note, "", *_qffl_table(blocks, lipschitz), "", "Targets, seed by seed:", ""]
        lines += [f"- {t}" for t in qffl_targets(blocks, lipschitz)]
        if tuning:
            chosen = "1 / lr" if lipschitz is None else f"{lipschitz:g}"
            lines += ["", f"Choice of L on seed {TUNE_SEED} (not reported above), against FedAvg on that seed; "
                      f"chosen: L = {chosen}:", ""] + [f"- {t}" for t in tuning]
        replace_block(readme, begin=BEGIN["fmnist"], end=END["fmnist"], lines=lines)
