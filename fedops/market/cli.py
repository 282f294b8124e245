"""``fedops market serve`` and ``fedops market demo``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

market_app = typer.Typer(no_args_is_help=True, help="The marketplace: requesters publish tasks, data owners join.")

DEFAULT_PORT = 8100


@market_app.command("serve")
def serve(
    root: Path = typer.Option(Path("market"), help="The market's directory: its database, each task's config and work directory."),
    db: Optional[str] = typer.Option(None, help="Database URL (default: sqlite:///ROOT/market.db; the reputation ledger shares it)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, min=1, max=65535),
    runner: bool = typer.Option(True, help="Also serve the training deployment here (--no-runner: a worker elsewhere serves it)."),
    poll: float = typer.Option(1.0, min=0.1, help="Seconds between the launcher's checks of due and running tasks."),
    attempts: int = typer.Option(3, min=1, help="Runs of a task's training before the launcher gives up (later ones resume)."),
) -> None:
    """Serve the marketplace's web app and REST API (OpenAPI page at /docs) and start due tasks as
    runs of the Prefect deployment 'federated-training/market'."""
    from fedops.cli import _prefect_api, _user_errors, console

    with _user_errors(), _prefect_api():
        import uvicorn

        from fedops.market.app import create_app
        from fedops.market.launcher import DEPLOYMENT, Launcher, wait_for_deployment
        from fedops.market.service import Market

        market = Market.at(root, db)
        child = None
        if runner:
            env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "2")}
            env.pop("MLFLOW_TRACKING_URI", None)  # each task tracks into its own work directory's store
            log = open(market.root / "runner.log", "a")
            child = subprocess.Popen([sys.executable, "-m", "fedops.market.runner", str(market.root)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        launcher = None
        try:
            if child is not None:
                wait_for_deployment(DEPLOYMENT)
            launcher = Launcher(market, poll_s=poll, attempts=attempts)
            launcher.start()
            console.print(f"fedops market on http://{host}:{port}/ (API: http://{host}:{port}/docs), "
                          f"database {market.url}", highlight=False, soft_wrap=True)
            try:
                uvicorn.run(create_app(market), host=host, port=port, log_level="warning")
            except KeyboardInterrupt:  # uvicorn stopped gracefully on Ctrl-C or SIGTERM and passed the signal on
                pass
        finally:
            if launcher is not None:
                launcher.stop()
            if child is not None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
            market.dispose()


@market_app.command("demo")
def demo(
    url: str = typer.Option(f"http://127.0.0.1:{DEFAULT_PORT}", help="The market service (start it with `fedops market serve`)."),
    owners: int = typer.Option(5, min=2, max=50, help="Simulated data owners (the last one's device is too small for the task)."),
    rounds: int = typer.Option(10, min=1, max=1000),
    data_dir: Path = typer.Option(Path("market-owners"), help="Where the owners' data set is prepared and partitioned."),
) -> None:
    """Seed a market round: a requester publishes a Pima task, N owners bound to partitions of the
    prepared data set register their devices and fingerprints, the eligible ones join (the task
    starts when they have), and the links to watch it are printed."""
    from fedops.cli import _prefect_api, _user_errors, console

    with _user_errors(), _prefect_api():
        from fedops.market.demo import run_demo

        result = run_demo(url=url, owners=owners, rounds=rounds, data_dir=data_dir, say=lambda s: console.print(
            s, highlight=False, soft_wrap=True))
        console.print_json(data=result)
