"""The ``fedops`` command line: the same flows as DVC and the Prefect deployments, for people and CI."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from fedops.env import configure_environment

# The CLI reports failures as one line of its own and shows progress itself: Prefect's console
# handler stays quiet (its API handler still sends every log line to the Prefect server / UI).
_CONSOLE_LEVEL_SET_BY_USER = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" in os.environ
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
configure_environment()

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated-learning MLOps pipeline.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fedops {version('fedops')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Federated-learning MLOps pipeline."""
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks and paper replications.")
app.add_typer(bench_app, name="bench")
from fedops.market.cli import market_app  # noqa: E402  (light: typer only)

app.add_typer(market_app, name="market")
console = Console(stderr=True)
out = Console()

DEFAULT_CONFIG = Path("params.yaml")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: --set server.rounds=3 (YAML value).")
FreshOpt = typer.Option(False, "--fresh", help="Start training over instead of resuming an interrupted run of "
                        "the same config in this work directory.")
WaitOpt = typer.Option(False, "--wait", help="If another process is using the work directory, wait for it "
                       "instead of refusing.")


def _parse_sets(sets: list[str] | None) -> dict[str, Any]:
    from fedops.config import parse_override

    return dict(parse_override(item) for item in sets or [])


def _termination() -> type[BaseException]:
    """Prefect's flow engine turns SIGTERM into its own TerminationSignal (only once prefect is
    imported: a config error is reported without importing it)."""
    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions.TerminationSignal if exceptions else KeyboardInterrupt


@contextmanager
def _user_errors() -> Iterator[None]:
    """Known user-facing errors become one line on stderr and a non-zero exit, no traceback.
    Ctrl-C and SIGTERM end the command the same way: exit status 130 (SIGINT) or 143 (SIGTERM)."""
    import signal

    from fedops.config import ConfigError
    from fedops.errors import FedopsError

    def terminate(signum, frame):  # SIGTERM (timeout, systemd, Kubernetes) ends the run like Ctrl-C
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except (KeyboardInterrupt, _termination()) as exc:
        why = "SIGTERM" if not isinstance(exc, KeyboardInterrupt) or str(exc) == "SIGTERM" else "SIGINT"
        console.print(f"[yellow]interrupted ({why}):[/yellow] a training run that had started is marked KILLED; "
                      "the same command resumes it from its last complete round", highlight=False, soft_wrap=True)
        raise typer.Exit(143 if why == "SIGTERM" else 130) from None
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except FedopsError as exc:  # data, validation, missing-input and round failures
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fairness_gate(summary: dict[str, Any], *, exit_code: bool) -> None:
    """Say which fairness checks the final model failed and by how much; ``fedops run`` then exits
    with status 3 (the model is registered without the ``current`` alias)."""
    failed = summary.get("fairness_failed") or []
    if not failed:
        return
    console.print("[red]fairness check failed:[/red] " + "; ".join(failed)
                  + ". The model is registered without the 'current' alias.", highlight=False, soft_wrap=True)
    if exit_code:
        from fedops.fairness.checks import EXIT_FAIRNESS

        raise typer.Exit(EXIT_FAIRNESS)


@contextmanager
def _prefect_api() -> Iterator[None]:
    """The flows in this block share one local Prefect API server (see flows.api_server)."""
    from flows.api_server import local_api

    with local_api():
        yield


def _load(config: Path, sets: list[str] | None):
    from fedops.config import load_config

    return load_config(config, _parse_sets(sets))


@contextmanager
def _round_progress(enabled: bool = True) -> Iterator[None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedops import progress

    if not enabled:
        yield
        return
    bar = Progress(
        TextColumn("[bold]federated rounds"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=False,
    )
    state: dict[str, Any] = {}

    def on(event: str, data: dict[str, Any]) -> None:
        if event == "start":
            done = data.get("resumed_from") or 0
            if done:
                console.print(f"[cyan]resuming after round {done}[/cyan] (an interrupted run of this config; "
                              "--fresh starts over)")
            state["task"] = bar.add_task("rounds", total=data["rounds"], completed=done, status="")
        elif event == "round" and "task" in state:
            bar.update(state["task"], completed=data["round"], status=_round_status(data["metrics"]))
        elif event == "stopped":
            console.print(f"[yellow]stopped before round {data['round']}:[/yellow] {data['reason']}")

    unsubscribe = progress.subscribe(on)
    with bar:
        try:
            yield
        finally:
            unsubscribe()


def _round_status(m: dict[str, Any]) -> str:
    """One line per round from the released metrics (a number the release policy withheld is absent)."""
    parts = []
    if m.get("test/accuracy") is not None:
        parts.append(f"acc {m['test/accuracy']:.4f}")
    if m.get("train/loss") is not None:
        parts.append(f"loss {m['train/loss']:.4f}")
    if "clients/aggregated" in m and "clients/selected" in m:
        parts.append(f"clients {int(m['clients/aggregated'])}/{int(m['clients/selected'])}")
    if "privacy/epsilon" in m:
        parts.append(f"eps {m['privacy/epsilon']:.3f}")
    return "  ".join(parts)


@app.command()
def run(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="Config YAML (default: params.yaml)."),
    workdir: Path = typer.Option(Path("."), help="Where data/, reports/, models/ and mlflow/ live."),
    sets: Optional[list[str]] = SetOpt,
    fresh: bool = FreshOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run the whole pipeline: prepare, validate, partition, train, evaluate, baseline.

    An interrupted training run of the same config in the same work directory resumes from its
    last complete round (``--fresh`` starts over)."""
    with _user_errors():
        cfg = _load(config, sets)
        from fedops.paths import Paths
        from fedops.workdir import workdir_lock

        from fedops.round.crowd import check_ledger

        check_ledger(cfg, Paths.at(workdir).root)  # an unreachable ledger: refused before any stage writes
        results = {}
        with workdir_lock(Paths.at(workdir).root, wait=wait, what="fedops run"), _prefect_api():
            from flows.pipeline import STAGES, run_stage

            for stage in STAGES:
                console.print(f"[bold cyan]stage[/bold cyan] {stage}")
                with _round_progress(stage == "train"):
                    results[stage] = run_stage(stage, cfg, str(workdir), fresh=fresh)
        _print_summary(results)
        _fairness_gate(results.get("train") or {}, exit_code=True)


@app.command()
def stage(
    name: str = typer.Argument(..., help="prepare | validate | partition | train | evaluate | baseline"),
    params: Path = typer.Option(DEFAULT_CONFIG, "--params", help="Config YAML (DVC uses params.yaml)."),
    workdir: Path = typer.Option(Path(".")),
    sets: Optional[list[str]] = SetOpt,
    fresh: bool = FreshOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run one pipeline stage (what each DVC stage calls); train resumes an interrupted run."""
    with _user_errors():
        cfg = _load(params, sets)
        with _prefect_api():
            from flows.pipeline import run_stage

            with _round_progress(name == "train"):
                result = run_stage(name, cfg, str(workdir), fresh=fresh, wait=wait)
        out.print_json(json.dumps(result, default=str))
        if name == "train":  # DVC records the stage; reports/fairness.json says passed: false
            _fairness_gate(result or {}, exit_code=False)


@app.command()
def validate(
    config: Path = typer.Argument(DEFAULT_CONFIG),
    workdir: Path = typer.Option(Path(".")),
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Prepare the data set and validate it with Great Expectations; non-zero exit on failure."""
    from fedops.paths import Paths

    with _user_errors():
        cfg = _load(config, sets)
        with _prefect_api():
            from flows.pipeline import run_stage

            run_stage("prepare", cfg, str(workdir))
            try:
                run_stage("validate", cfg, str(workdir))
            finally:
                _print_validation(Paths.at(workdir).validation_report)


@app.command()
def partition(
    config: Path = typer.Argument(DEFAULT_CONFIG),
    workdir: Path = typer.Option(Path(".")),
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Prepare, validate and partition the data set; print the clients' sizes and label counts."""
    from fedops.paths import Paths

    with _user_errors():
        cfg = _load(config, sets)
        with _prefect_api():
            from flows.pipeline import run_stage

            for s in ("prepare", "validate", "partition"):
                run_stage(s, cfg, str(workdir))
        paths = Paths.at(workdir)
        manifest = json.loads(paths.manifest.read_text())
        t = Table(title=f"{manifest['partitioner']} {manifest['params']} over {manifest['num_clients']} clients")
        t.add_column("client")
        t.add_column("size", justify="right")
        t.add_column("label histogram")
        t.add_column("validation")
        for c in manifest["clients"][:50]:
            t.add_row(str(c["id"]), str(c["size"]), " ".join(map(str, c["label_histogram"])), c.get("validation", "-"))
        out.print(t)
        out.print(f"manifest: {paths.manifest}\nheatmap:  {paths.heatmap}")


@app.command()
def ledger(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="The config whose reputation.ledger to read."),
    workdir: Path = typer.Option(Path("."), help="Where a relative SQLite ledger lives."),
    url: Optional[str] = typer.Option(None, help="A ledger URL instead of the config's."),
    task: Optional[str] = typer.Option(None, help="Only this task's events."),
    events_csv: Optional[Path] = typer.Option(None, "--events-csv", help="Write the events to this CSV file."),
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Print each client's reputation from the reputation ledger (and export its events)."""
    with _user_errors():
        cfg = _load(config, sets)
        from sqlalchemy.engine import make_url

        from fedops.reputation import Ledger, LedgerError, ReputationParams
        from fedops.reputation.export import ledger_tables
        from fedops.round.crowd import ledger_url

        rep = cfg.reputation
        resolved = make_url(ledger_url(url or rep.ledger, workdir.resolve(), create=False))
        db = resolved.database
        if resolved.drivername.startswith("sqlite") and db and db != ":memory:" and not Path(db).is_file():
            raise LedgerError(f"no reputation ledger at {db}: a run with reputation.enabled writes it there "
                              "(or pass --url / --workdir)")
        book = Ledger(resolved.render_as_string(hide_password=False))
        events, clients = ledger_tables(book, task=task,
                                        params=ReputationParams(kappa=rep.kappa, eta=rep.eta, fading=rep.fading))
        t = Table(title=f"reputation ({len(events)} events{f' of task {task}' if task else ''})")
        for col in ("client", "positive", "negative", "belief", "disbelief", "uncertainty", "reputation"):
            t.add_column(col, justify="left" if col == "client" else "right")
        for row in clients.itertuples(index=False):
            t.add_row(row.client, *(f"{v:.3f}" for v in row[1:]))
        out.print(t)
        if events_csv is not None:
            events.to_csv(events_csv, index=False)
            out.print(f"events: {events_csv}")


@app.command()
def ui(
    workdir: Path = typer.Option(Path(".")),
    port: int = typer.Option(5000),
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store."""
    from fedops.paths import Paths
    from fedops.tracking import resolve_tracking_uri

    paths = Paths.at(workdir)
    uri = resolve_tracking_uri(None, paths.mlflow_dir)
    console.print(f"MLflow UI on http://127.0.0.1:{port}  (store {uri})")
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
         "--default-artifact-root", (paths.mlflow_dir / "artifacts").resolve().as_uri(),
         "--host", "127.0.0.1", "--port", str(port)],
    )


@app.command()
def serve(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="Default parameters for the deployments."),
    workdir: Path = typer.Option(Path(".")),
) -> None:
    """Serve the Prefect deployments 'fedops-pipeline/default' and 'federated-training/default'.

    Needs a Prefect API (e.g. `prefect server start --host 127.0.0.1` and PREFECT_API_URL set)."""
    if not _CONSOLE_LEVEL_SET_BY_USER:  # the serving terminal shows each flow run's lines (a line per round)
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    with _user_errors():
        from flows.deployments import serve_all

        serve_all(config.resolve(), workdir.resolve())


@bench_app.command("w1")
def bench_w1(
    rounds: Optional[int] = typer.Option(None, help="Rounds to time (default: configs/w1.yaml)."),
    config: Path = typer.Option(Path("configs/w1.yaml")),
) -> None:
    """Time W1 through the full pipeline and as a bare PyTorch loop; print the ratio."""
    with _user_errors():
        from fedops_benchmarks.w1 import main

        r = main(config=config, rounds=rounds)
        out.print(f"{r['workload']}, {r['rounds']} rounds")
        out.print(f"  full pipeline (Prefect + MLflow, {r['pipeline_workers']} workers): {r['pipeline_s']:.1f} s, of "
                  f"which {r['pipeline_rounds_s']:.1f} s inside the rounds (the rest: start-up, MLflow run set-up, "
                  f"per-round tracking and checkpoints, registration)")
        out.print(f"  bare PyTorch loop, one torch thread, same SGD steps + same evaluation: {r['bare_loop_s']:.1f} s "
                  f"(of which evaluation {r['bare_eval_s']:.1f} s)")
        out.print(f"  bare loop on {r['bare_procs']} single-threaded worker processes (clients split by rows, the "
                  f"test set in {r['bare_procs']} shards): {r['bare_procs_s']:.1f} s (of which evaluation "
                  f"{r['bare_procs_eval_s']:.1f} s)")
        out.print(f"  ratio pipeline / fastest bare loop:    {r['ratio']:.2f}x "
                  f"(one thread {r['ratio_one_thread']:.2f}x, worker processes {r['ratio_procs']:.2f}x)")
        out.print(f"  ratio pipeline / bare SGD steps alone: {r['ratio_sgd_only']:.2f}x")
        out.print(f"  CPU time: pipeline {r['pipeline_cpu_s']:.1f} s (with its Prefect API server), bare loop "
                  f"{r['bare_loop_cpu_s']:.1f} s, worker processes {r['bare_procs_cpu_s']:.1f} s; ratio "
                  f"{r['cpu_ratio']:.2f}x to the fastest (one thread {r['cpu_ratio_one_thread']:.2f}x, "
                  f"worker processes {r['cpu_ratio_procs']:.2f}x)")
        out.print(f"  floor: the pipeline's CPU over the machine's {r['cores']} cores is {r['pipeline_floor_s']:.1f} s "
                  f"({r['floor_ratio']:.2f}x the fastest bare loop): no overlap takes its wall time below that; the "
                  f"worker processes kept {r['bare_procs_busy_cores']:.2f} cores busy")
        out.print(f"  final models max |diff|: pipeline {r['max_abs_param_diff']:.2e}, worker processes "
                  f"{r['max_abs_param_diff_procs']:.2e}; test accuracy pipeline {r['pipeline_test_accuracy']:.4f}, "
                  f"bare loop {r['bare_test_accuracy']:.4f}")


@bench_app.command("engine")
def bench_engine(
    models: str = typer.Option("mlp,small_cnn", help="Comma-separated: mlp (2NN, 784-200-200-10), small_cnn."),
    rounds: int = typer.Option(5, min=3, help="Rounds per side (steady state: the median of rounds 2..R-1)."),
    repeats: int = typer.Option(1, min=1, help="Interleaved repeats of every side."),
    flower: Optional[bool] = typer.Option(None, help="Run Flower's simulation engine too (default: when "
                                                      ".flower-venv exists; bash scripts/flower-env.sh makes it)."),
    write_readme: bool = typer.Option(False, help="Write the table into README.md (between its engine markers)."),
    sides: Optional[str] = typer.Option(None, help="Comma-separated sides (default: all but the DP ones): bare, "
                                                    "bare_procs, sequential, cohort, auto, cohort_noqc, auto_noqc, "
                                                    "pipeline; with local DP-SGD: dp_sequential, dp_cohort, dp_auto."),
) -> None:
    """W2 (1,000 clients, 100 per round): the bare loop, fedops' executors, the pipeline and Flower, side by side."""
    with _user_errors():
        from fedops_benchmarks.engine import DP_SIDES, SIDES, format_table, main, write_readme as write

        chosen = SIDES if sides is None else tuple(s.strip() for s in sides.split(",") if s.strip())
        unknown = [s for s in chosen if s not in SIDES + DP_SIDES]
        if unknown or not chosen:
            raise typer.BadParameter(f"--sides {sides!r}: unknown {unknown or 'none given'}; expected some of "
                                     f"{', '.join(SIDES + DP_SIDES)}")
        if write_readme and set(chosen) != set(SIDES):
            raise typer.BadParameter("--write-readme writes the full table: run it without --sides")
        r = main(models=tuple(m.strip() for m in models.split(",") if m.strip()), rounds=rounds, repeats=repeats,
                 flower=flower, sides=chosen)
        for line in format_table(r):
            typer.echo(line)  # plain: a markdown table must not be wrapped
        if write_readme:
            write(r)


@bench_app.command("cohort")
def bench_cohort(
    models: str = typer.Option("mlp,small_cnn", help="Comma-separated: mlp (2NN, 784-200-200-10), small_cnn."),
    ks: str = typer.Option("10,100", help="Comma-separated client counts K."),
    rows: int = typer.Option(600, min=1, help="Training rows per client (E = 1, B = 32)."),
    repeats: int = typer.Option(2, min=1, help="Interleaved timed repeats (after one untimed pass)."),
) -> None:
    """Cohort training against one client at a time (1 thread, 2 threads, two 1-thread processes), interleaved."""
    with _user_errors():
        from fedops_benchmarks.cohort_speed import MODELS, format_table, main

        chosen = tuple(m.strip() for m in models.split(",") if m.strip())
        unknown = [m for m in chosen if m not in MODELS]
        if unknown or not chosen:
            raise typer.BadParameter(f"--models {models!r}: unknown {unknown or 'none given'}; expected some of "
                                     f"{', '.join(MODELS)}")
        try:
            counts = tuple(int(k) for k in ks.split(",") if k.strip())
        except ValueError:
            counts = ()
        if not counts or min(counts) < 1:
            raise typer.BadParameter(f"--ks {ks!r}: expected comma-separated client counts >= 1, e.g. 10,100")
        for line in format_table(main(models=chosen, ks=counts, rows=rows, repeats=repeats)):
            typer.echo(line)


@bench_app.command("scale")
def bench_scale(
    clients: int = typer.Option(10_000, min=2), per_round: int = typer.Option(100, min=1),
    rounds: int = typer.Option(20, min=3), executor: str = typer.Option("auto"),
) -> None:
    """Many simulated clients (index partitions of Fashion-MNIST, 2NN MLP) in process: RSS over rounds."""
    with _user_errors():
        from fedops_benchmarks.engine import scale

        r = scale(clients=clients, per_round=per_round, rounds=rounds, executor=executor)
        by_round = r["rss_mb_by_round"]
        middle = [v for k, v in by_round.items() if 1 < k < rounds]
        out.print(f"{r['clients']:,} clients, {r['per_round']} per round, {r['rounds']} rounds, executor {r['executor']}: "
                  f"{r['s_per_round']:.2f} s per round")
        out.print(f"  RSS after round 1: {r['rss_mb'][1][0]:,.0f} MB; after round {rounds}: {r['rss_mb'][rounds][0]:,.0f} MB "
                  f"(peak {r['rss_mb'][rounds][1]:,.0f} MB); rounds 2..{rounds - 1}: {min(middle):,.0f}-{max(middle):,.0f} MB")


@bench_app.command("fedsgd")
def bench_fedsgd(target: float = typer.Option(0.80, help="Target test accuracy.")) -> None:
    """FedAvg (E=5, B=10) vs FedSGD (E=1, full batch): rounds to reach a target accuracy."""
    with _user_errors():
        from fedops_benchmarks.fedsgd import main

        r = main(target=target, log=console.print)
        for key in ("fedavg", "fedsgd"):
            s = r[key]
            reached = s["rounds_to_target"] or f"not reached in {s['rounds_run']}"
            out.print(f"{s['config']}: E={s['epochs']} B={s['batch_size'] or 'full'} lr={s['lr']}: "
                      f"rounds to {target:.0%} = {reached} "
                      f"(best {s['best_accuracy']:.4f}, {s['seconds']:.0f} s)")
        if r["round_reduction"]:
            out.print(f"FedAvg needs {r['round_reduction']:.1f}x fewer rounds than FedSGD")


@bench_app.command("privacy")
def bench_privacy(rounds: Optional[int] = typer.Option(None, help="Rounds per run (default: configs/dp_fmnist.yaml).")) -> None:
    """Test accuracy against epsilon in {1, 2, 4, 8, inf} (and SecAgg+), rewriting the README table."""
    with _user_errors():
        from fedops_benchmarks.privacy_table import main

        for r in main(rounds=rounds, log=console.print):
            out.print(r)


@bench_app.command("compression")
def bench_compression(rounds: Optional[int] = typer.Option(None, help="Rounds per run (default: configs/compression.yaml).")) -> None:
    """Final accuracy and upload/download MB per codec (same rounds for all), rewriting the README table."""
    with _user_errors():
        from fedops_benchmarks.compression_table import main

        for r in main(rounds=rounds, log=console.print):
            out.print(f"{r['model']:9s} seed {r['seed']}  {r['label']:28s} accuracy {r['accuracy']:.4f}  "
                      f"up {r['up_mb']:8.2f} MB  down {r['down_mb']:8.2f} MB")


@bench_app.command("fairness")
def bench_fairness(
    rounds: Optional[int] = typer.Option(None, help="Rounds per run (default: each config's)."),
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="adult, compas, fmnist (default: all)."),
    processes: int = typer.Option(2, min=1, help="Worker processes (1 CPU thread each)."),
) -> None:
    """FedAvg vs FairFed vs q-FFL on Adult and COMPAS, and q-FFL on Fashion-MNIST; rewrites the README tables."""
    with _user_errors():
        from fedops_benchmarks.fairness_table import main

        main(rounds=rounds, processes=processes, datasets=tuple(dataset or ("adult", "compas", "fmnist")),
             log=console.print)


@bench_app.command("startup")
def bench_startup(repeats: int = typer.Option(7, min=1)) -> None:
    """Seconds until a config error is reported (fedops run BAD.yaml), beside `fedops --version`."""
    with _user_errors():
        from fedops_benchmarks.startup import main

        r = main(repeats=repeats)
        out.print(f"config error, {r['repeats']} runs interleaved with `fedops --version`: median "
                  f"{r['error_median_s']:.2f} s, max {r['error_max_s']:.2f} s (`fedops --version`: median "
                  f"{r['version_median_s']:.2f} s, max {r['version_max_s']:.2f} s)\n  {r['message']}")


@bench_app.command("anomaly")
def bench_anomaly() -> None:
    """False-positive rate of the anomaly flag on clean Fashion-MNIST and Pima runs, per clients
    per round x partition skew, rewriting the README table."""
    with _user_errors():
        from fedops_benchmarks.anomaly_fpr import main, table

        out.print(table(main(log=console.print)))


@bench_app.command("crowdfl")
def bench_crowdfl() -> None:
    """CrowdFL's bad-data experiment on Pima (one of three owners with missing values), with and
    without quality control, rewriting the README table."""
    with _user_errors():
        from fedops_benchmarks.crowdfl import main

        r = main(log=console.print)
        for label, row in r["rows"].items():
            out.print(f"{label:24s} accuracy {row['mean']:.4f} (spread {row['spread']:.4f})")


@bench_app.command("crowd")
def bench_crowd(
    part: Optional[list[str]] = typer.Option(None, "--part", help="reputation, straggler, backups or contribution "
                                             "(repeatable; default: all)."),
) -> None:
    """CrowdFL's reputation (Pima, two tasks on one ledger) and straggler (Table 2 devices)
    experiments, backups against none, and contribution scoring (GTG-Shapley against exact
    Shapley; label-flipped clients), rewriting the README blocks."""
    with _user_errors():
        from fedops_benchmarks.crowd import main

        main(part, log=console.print)


@bench_app.command("attacks")
def bench_attacks(
    rounds: Optional[int] = typer.Option(None, help="Rounds per run (default: configs/attacks.yaml)."),
    processes: int = typer.Option(2, min=1, help="Worker processes (one CPU thread each)."),
) -> None:
    """Accuracy under attacks x malicious fraction x robust rule (3 seeds) and the backdoor rows,
    rewriting the README table."""
    with _user_errors():
        from fedops_benchmarks.attack_table import main

        r = main(rounds=rounds, processes=processes, log=console.print)
        out.print(f"clean FedAvg {r['clean']:.4f}")
        for attack, c in r["checks_at_20pct"].items():
            out.print(f"20% {attack:10s}: best {c['best_rule']} {c['best']:.4f} ({c['gap_pts']:+.2f} pts), "
                      f"FedAvg {c['fedavg']:.4f}")
        out.print(f"{r['seconds'] / 60:.1f} min")


@bench_app.command("codecs")
def bench_codecs() -> None:
    """Encode + decode time of 1.2M floats per codec, as a ratio to a plain tensor copy."""
    with _user_errors():
        from fedops_benchmarks.codec_speed import main

        main(log=lambda line: out.print(line, soft_wrap=True))


@bench_app.command("secagg")
def bench_secagg() -> None:
    """SecAgg+ round cost against a plain round (100 clients, 1.2M-parameter CNN, 10% dropouts),
    and per-client protocol cost as n grows from 50 to 200."""
    with _user_errors():
        from fedops_benchmarks.secagg import main

        r = main(log=console.print)
        rr = r["round"]
        out.print(f"100 clients, {rr['num_params']:,} parameters, 10% dropouts after key sharing, fastest of "
                  f"{len(rr['times']['plain'])} interleaved: plain round {rr['plain']:.1f} s, SecAgg+ round "
                  f"{rr['secagg+']:.1f} s, ratio {rr['ratio']:.2f}x "
                  f"(plain {', '.join(f'{t:.1f}' for t in rr['times']['plain'])} s; "
                  f"SecAgg+ {', '.join(f'{t:.1f}' for t in rr['times']['secagg+'])} s)")
        for g in r["growth"]:
            out.print(f"{g['mode']:8s} n={g['n']:4d} k={g['k']:4d}: {g['per_client_ms']:8.1f} ms/client, "
                      f"{g['per_client_kb_up']:8.1f} kB up/client")


def _print_validation(path: Path) -> None:
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    if report.get("error"):
        console.print(f"[red]unreadable data:[/red] {report['error']}")
    for r in report.get("reports", []):
        t = Table(title=f"{r['name']} ({r['scope']}): {'passed' if r['success'] else 'FAILED'}")
        t.add_column("expectation")
        t.add_column("column")
        t.add_column("ok")
        t.add_column("unexpected", justify="right")
        for e in r["results"]:
            t.add_row(e["expectation"], str(e.get("column") or ""), "yes" if e["success"] else "[red]no[/red]",
                      str(e.get("unexpected_count") if e.get("unexpected_count") is not None else ""))
        out.print(t)
    out.print(f"report: {path}")


def _print_summary(results: dict[str, Any]) -> None:
    train, ev, base = results.get("train", {}), results.get("evaluate", {}), results.get("baseline", {})
    t = Table(title="fedops pipeline")
    t.add_column("what")
    t.add_column("value")
    t.add_row("federated test accuracy", f"{ev.get('test_accuracy', float('nan')):.4f}")
    if base.get("test_accuracy") is not None:
        t.add_row("centralised baseline accuracy", f"{base['test_accuracy']:.4f}")
    t.add_row("rounds", str(train.get("rounds")))
    up, down = train.get("comm_bytes_up_total"), train.get("comm_bytes_down_total")
    if up is not None and down is not None:  # withheld under client-level DP
        t.add_row("upload / download MB", f"{up / 1e6:.1f} / {down / 1e6:.1f}")
    if train.get("resumed_from"):
        t.add_row("resumed after round", str(train["resumed_from"]))
    t.add_row("model params sha256", str(train.get("model_params_sha256")))
    t.add_row("registered model", f"{train.get('registered_model')} v{train.get('registered_version')}")
    t.add_row("MLflow run", f"{train.get('run_id')} ({train.get('tracking_uri')})")
    out.print(t)


if __name__ == "__main__":  # pragma: no cover
    app()
