"""The marketplace service: a REST API under ``/api/v1`` (OpenAPI page at ``/docs``) and a
server-rendered web app (Jinja2, autoescaped; no JavaScript) over :class:`~fedops.market.service.Market`.

Callers authenticate with a bearer token (``Authorization: Bearer``) or, in the web app, the same
token in an HttpOnly, SameSite=Strict cookie set by the login form. Request bodies over
``max_body`` bytes are refused with 413 before they are parsed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request  # noqa: F401  (FastAPI: the type returned)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from fedops.market.schemas import AccountIn, DatasetIn, DeviceProfile, JoinIn, LeaveIn, TaskIn
from fedops.market.service import Account, Market, MarketError, Task

COOKIE = "fedops_market"
TEMPLATES = Path(__file__).with_name("templates")


class BodyLimit:
    """Pure ASGI middleware: a body larger than ``limit`` bytes gets 413 (by its Content-Length or
    as it streams in), before any handler reads it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send, length.decode(errors="replace"))
        body, more = [], True
        total = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                return await self._refuse(send, f"more than {self.limit}")
            body.append(chunk)
            more = message.get("more_body", False)
        data, sent = b"".join(body), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: str) -> None:
        body = json.dumps({"detail": f"request body of {size} bytes exceeds the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(market: Market, *, max_body: int = 64 * 1024, prefect_ui: str | None = None) -> FastAPI:
    from fastapi_offline import FastAPIOffline

    # /docs and /redoc serve their scripts from the package, not a CDN (the page works offline)
    app = FastAPIOffline(title="fedops market", version="1",
                  description="Requesters publish federated training tasks; data owners register their devices and "
                              "data-set fingerprints, join the tasks they are eligible for, and earn points and "
                              "reputation. Tasks run as Prefect deployments; results come from MLflow.")
    app.add_middleware(BodyLimit, limit=max_body)
    templates = Jinja2Templates(directory=str(TEMPLATES))  # autoescape on for .html
    templates.env.filters["when"] = _when
    app.state.market = market

    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, description="The account's token (POST /api/v1/accounts shows it once)")

    def token_of(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
        """The bearer token, else the web app's cookie."""
        return creds.credentials.strip() if creds is not None else request.cookies.get(COOKIE)

    def caller(token: str | None = Depends(token_of)) -> Account:
        return market.authenticate(token)

    def maybe_caller(token: str | None = Depends(token_of)) -> Account | None:
        try:
            return market.authenticate(token) if token else None
        except MarketError:
            return None

    def owner(token: str | None = Depends(token_of)) -> Account:
        return market.authenticate(token, role="owner")

    def requester(token: str | None = Depends(token_of)) -> Account:
        return market.authenticate(token, role="requester")

    @app.exception_handler(MarketError)
    async def _market_error(request: Request, exc: MarketError):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        if exc.status == 401:  # after login, back to the page (a form's POST target is not a page)
            back = request.url.path if request.method == "GET" else "/"
            return RedirectResponse(f"/login?next={back}", status_code=303)
        return templates.TemplateResponse(request, "error.html", {"me": None, "status": exc.status,
                                                                  "message": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):  # logged with its traceback; the caller gets no internals
        import logging

        logging.getLogger("fedops.market").error("%s %s failed", request.method, request.url.path, exc_info=exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "internal error (logged by the service)"}, status_code=500)
        return templates.TemplateResponse(request, "error.html", {"me": None, "status": 500,
                                          "message": "internal error (logged by the service)"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _messages(exc.errors())}, status_code=422)

    # --- REST API ------------------------------------------------------------------------------
    @app.post("/api/v1/accounts", status_code=201, tags=["accounts"])
    def register(body: AccountIn) -> dict[str, Any]:
        """Create a requester or owner account; the token is shown once (only its hash is kept)."""
        account, token = market.register(body)
        return {**_account(account), "token": token}

    @app.get("/api/v1/me", tags=["accounts"])
    def me(account: Account = Depends(caller)) -> dict[str, Any]:
        return _account(account)

    @app.put("/api/v1/me/device", tags=["owners"])
    def set_device(body: DeviceProfile, account: Account = Depends(owner)) -> dict[str, Any]:
        return _account(market.set_device(account, body))

    @app.post("/api/v1/me/datasets", status_code=201, tags=["owners"])
    def add_dataset(body: DatasetIn, account: Account = Depends(owner)) -> dict[str, Any]:
        """Register a data set by its fingerprint (schema, rows, label histogram, validation): never its rows."""
        ds = market.add_dataset(account, body)
        return {"id": ds.id, "name": ds.name, **ds.fingerprint}

    @app.get("/api/v1/me/datasets", tags=["owners"])
    def my_datasets(account: Account = Depends(owner)) -> list[dict[str, Any]]:
        return [{"id": d.id, "name": d.name, **d.fingerprint} for d in market.datasets(account)]

    @app.get("/api/v1/me/enrollments", tags=["owners"])
    def my_enrollments(account: Account = Depends(owner)) -> list[dict[str, Any]]:
        return [_enrollment(e, t) for e, t in market.my_enrollments(account)]

    @app.get("/api/v1/me/profile", tags=["owners"])
    def my_profile(account: Account = Depends(owner)) -> dict[str, Any]:
        """Reputation, points and history, from the ledger."""
        from fedops.market.results import owner_history

        return {**_account(account), **owner_history(market.url, account.id)}

    @app.get("/api/v1/me/tasks", tags=["owners"])
    def eligible_tasks(account: Account = Depends(owner)) -> list[dict[str, Any]]:
        """The open tasks, each with whether you may join and, when not, why."""
        out = []
        for task in market.tasks(state="open"):
            e = market.eligibility(account, task)
            out.append({**_task(market, task), "eligible": e.eligible, "reasons": e.reasons, "datasets": e.datasets})
        return out

    @app.post("/api/v1/tasks", status_code=201, tags=["requesters"])
    def publish(body: TaskIn, account: Account = Depends(requester)) -> dict[str, Any]:
        """Publish a task; its config is validated by the training config models now."""
        return _task(market, market.publish(account, body))

    @app.get("/api/v1/tasks", tags=["tasks"])
    def list_tasks(state: str | None = None) -> list[dict[str, Any]]:
        if state is not None and state not in ("open", "starting", "launched", "cancelled"):
            raise MarketError(422, f"state = {state!r}; expected open, starting, launched or cancelled")
        return [_task(market, t) for t in market.tasks(state=state)]

    @app.get("/api/v1/tasks/{task_id}", tags=["tasks"])
    def get_task(task_id: str) -> dict[str, Any]:
        return _task(market, market.task(task_id))

    @app.get("/api/v1/tasks/{task_id}/eligibility", tags=["owners"])
    def eligibility(task_id: str, account: Account = Depends(owner)) -> dict[str, Any]:
        e = market.eligibility(account, market.task(task_id))
        return {"task_id": e.task_id, "eligible": e.eligible, "reasons": e.reasons, "datasets": e.datasets}

    @app.post("/api/v1/tasks/{task_id}/join", status_code=201, tags=["owners"])
    def join(task_id: str, body: JoinIn, account: Account = Depends(owner)) -> dict[str, Any]:
        """Join with one of your data sets; the answer's training ID is needed for your actions in the task."""
        e = market.join(account, task_id, body.dataset)
        return {"task_id": e.task_id, "training_id": e.training_id, "dataset": e.dataset_id, "state": e.state}

    @app.post("/api/v1/tasks/{task_id}/leave", tags=["owners"])
    def leave(task_id: str, body: LeaveIn, account: Account = Depends(owner)) -> dict[str, Any]:
        e = market.leave(account, task_id, body.training_id)
        return {"task_id": e.task_id, "state": e.state}

    @app.get("/api/v1/enrollments/{training_id}", tags=["owners"])
    def get_enrollment(training_id: str, account: Account = Depends(owner)) -> dict[str, Any]:
        e = market.enrollment(account, training_id)
        out = _enrollment(e, market.task(e.task_id))
        stats = _statistics(market, market.task(e.task_id)) if e.client_index is not None else None
        if stats:
            c = e.client_index
            out.update(rounds_aggregated=stats["clients"].get(c, {}).get("aggregated"),
                       points=stats["points"].get(c))
        return out

    @app.post("/api/v1/tasks/{task_id}/start", status_code=202, tags=["requesters"])
    def start(task_id: str, account: Account = Depends(requester)) -> dict[str, Any]:
        """Close enrolment and start training now (the launcher triggers the deployment)."""
        return _task(market, market.begin_start(task_id, requester=account))

    @app.post("/api/v1/tasks/{task_id}/cancel", tags=["requesters"])
    def cancel(task_id: str, account: Account = Depends(requester)) -> dict[str, Any]:
        return _task(market, market.cancel(account, task_id))

    @app.get("/api/v1/tasks/{task_id}/statistics", tags=["requesters"])
    def statistics(task_id: str, account: Account = Depends(requester)) -> dict[str, Any]:
        """State (Prefect), per-round metrics, participants, points and the registered model (MLflow)."""
        task = market.own_task(account, task_id)
        return {**_task(market, task), **_statistics(market, task)}

    @app.get("/api/v1/tasks/{task_id}/model", tags=["requesters"])
    def model(task_id: str, account: Account = Depends(requester)) -> Response:
        """The registered MLflow model version's files, as a zip."""
        return _model_response(market, market.own_task(account, task_id))

    # --- web app -------------------------------------------------------------------------------
    def page(request: Request, name: str, me: Account | None, status: int = 200, **ctx) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"me": me, **ctx}, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, me: Account | None = Depends(maybe_caller)):
        rows = []
        for task in market.tasks():
            e = market.eligibility(me, task) if me is not None and me.role == "owner" and task.state == "open" else None
            rows.append({"task": _task(market, task), "eligibility": e})
        return page(request, "tasks.html", me, rows=rows)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/"):
        return page(request, "login.html", None, next=_local(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        form = await request.form()
        token, nxt = str(form.get("token", "")), _local(str(form.get("next", "/")))
        try:
            market.authenticate(token)
        except MarketError as exc:
            return page(request, "login.html", None, status=401, next=nxt, error=exc.message)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout():
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/tasks/new", response_class=HTMLResponse, include_in_schema=False)
    def new_task_form(request: Request, me: Account = Depends(requester)):
        return page(request, "new_task.html", me, form={}, errors=[])

    @app.post("/tasks/new", include_in_schema=False)
    async def new_task(request: Request, me: Account = Depends(requester)):
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            body = _task_from_form(form)
            task = market.publish(me, body)
        except ValidationError as exc:
            return page(request, "new_task.html", me, status=422, form=form, errors=_messages(exc.errors()))
        except MarketError as exc:
            return page(request, "new_task.html", me, status=exc.status, form=form, errors=[exc.message])
        return RedirectResponse(f"/tasks/{task.id}", status_code=303)

    @app.get("/tasks/{task_id}", response_class=HTMLResponse, include_in_schema=False)
    def task_page(request: Request, task_id: str, me: Account | None = Depends(maybe_caller)):
        task = market.task(task_id)
        mine = None
        elig = None
        if me is not None and me.role == "owner":
            elig = market.eligibility(me, task)
            mine = next((e for e, t in market.my_enrollments(me) if t.id == task.id and e.state == "joined"), None)
        datasets = {d.id: d for d in market.datasets(me)} if me is not None and me.role == "owner" else {}
        return page(request, "task.html", me, task=_task(market, task), eligibility=elig, mine=mine,
                    datasets=datasets, own=me is not None and me.id == task.requester_id)

    @app.post("/tasks/{task_id}/join", include_in_schema=False)
    async def join_form(request: Request, task_id: str, me: Account = Depends(owner)):
        form = await request.form()
        market.join(me, task_id, str(form.get("dataset", ""))[:32])
        return RedirectResponse(f"/tasks/{task_id}", status_code=303)

    @app.post("/tasks/{task_id}/leave", include_in_schema=False)
    async def leave_form(request: Request, task_id: str, me: Account = Depends(owner)):
        form = await request.form()
        market.leave(me, task_id, str(form.get("training_id", ""))[:64])
        return RedirectResponse(f"/tasks/{task_id}", status_code=303)

    @app.post("/tasks/{task_id}/start", include_in_schema=False)
    def start_form(task_id: str, me: Account = Depends(requester)):
        market.begin_start(task_id, requester=me)
        return RedirectResponse(f"/tasks/{task_id}/stats", status_code=303)

    @app.get("/tasks/{task_id}/stats", response_class=HTMLResponse, include_in_schema=False)
    def stats_page(request: Request, task_id: str, me: Account = Depends(requester)):
        task = market.own_task(me, task_id)
        stats = _statistics(market, task)
        return page(request, "stats.html", me, task=_task(market, task), stats=stats,
                    curve=_curve([(r["round"], r.get("test/accuracy")) for r in stats["rounds"]]))

    @app.get("/tasks/{task_id}/model.zip", include_in_schema=False)
    def model_download(task_id: str, me: Account = Depends(requester)):
        return _model_response(market, market.own_task(me, task_id))

    @app.get("/profile", response_class=HTMLResponse, include_in_schema=False)
    def profile(request: Request, me: Account = Depends(owner)):
        from fedops.market.results import owner_history

        history = owner_history(market.url, me.id)
        names = {f"market-{t.id}": t.title for _, t in market.my_enrollments(me)}
        return page(request, "profile.html", me, history=history, names=names,
                    enrollments=[_enrollment(e, t) for e, t in market.my_enrollments(me)],
                    datasets=market.datasets(me))

    return app


# --- views --------------------------------------------------------------------------------------
def _account(a: Account) -> dict[str, Any]:
    return {"id": a.id, "role": a.role, "name": a.name, "device": a.device}


def _task(market: Market, t: Task) -> dict[str, Any]:
    spec = t.spec
    joined = len(market.enrollments(t.id))
    cfg = spec["config"]
    return {"id": t.id, "title": t.title, "description": t.description, "state": t.state, "note": t.note,
            "requirements": spec["requirements"], "device": spec["device"], "start_at": spec["start_at"],
            "min_owners": t.min_owners, "max_owners": t.max_owners, "joined": joined,
            "reward_budget": spec["reward_budget"], "model": spec.get("initial_model") or _model_key(cfg),
            "rounds": (cfg.get("server") or {}).get("rounds"), "test_set": _test_set(cfg),
            "created_at": t.created_at, "started_at": t.started_at}


def _model_key(cfg: dict[str, Any]) -> str | None:
    m = cfg.get("model")
    return m.get("name") if isinstance(m, dict) else m


def _test_set(cfg: dict[str, Any]) -> str:
    d = cfg.get("data") if isinstance(cfg.get("data"), dict) else {"name": cfg.get("data")}
    frac = d.get("test_fraction")
    return f"{d.get('name')} held-out test split" + (f" ({frac:.0%})" if isinstance(frac, (int, float)) else "")


def _enrollment(e, t: Task) -> dict[str, Any]:
    return {"task_id": e.task_id, "task_title": t.title, "task_state": t.state, "training_id": e.training_id,
            "state": e.state, "dataset": e.dataset_id, "client_index": e.client_index, "joined_at": e.joined_at}


def _statistics(market: Market, task: Task) -> dict[str, Any]:
    from fedops.market.results import flow_runs, statistics

    runs = flow_runs(list(task.flow_run_ids))
    stats = statistics(market.workdir(task.id), list(task.flow_run_ids)) if runs else \
        {"rounds": [], "clients": {}, "points": {}, "model": None, "run_id": None, "status": None}
    people = market.participants(task.id)
    for p in people:
        c = p["client_index"]
        p["rounds_aggregated"] = stats["clients"].get(c, {}).get("aggregated", 0) if c is not None else 0
        p["points"] = stats["points"].get(c) if c is not None else None
    training = runs[-1]["state"] if runs else None
    return {"training_state": training, "flow_runs": runs, **stats, "participants": people}


def _model_response(market: Market, task: Task) -> Response:
    from fedops.market.results import model_archive, statistics

    stats = statistics(market.workdir(task.id), list(task.flow_run_ids))
    if not stats.get("model"):
        raise MarketError(409, "the task has no registered model yet (training has not finished)")
    m = stats["model"]
    data = model_archive(market.workdir(task.id), m["name"], m["version"])
    return Response(data, media_type="application/zip", headers={
        "content-disposition": f'attachment; filename="{m["name"]}-v{m["version"]}.zip"',
        "x-model-name": m["name"], "x-model-version": m["version"],
        "x-content-sha256": hashlib.sha256(data).hexdigest()})


def _messages(errors) -> list[str]:
    out = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid"))
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def _local(path: str) -> str:
    """Only same-site redirects after login."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def _when(ts: float | str | None) -> str:
    if ts is None:
        return "—"
    if isinstance(ts, str):
        return ts.replace("T", " ")[:19]
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


def _task_from_form(form: dict[str, str]) -> TaskIn:
    import yaml

    try:
        config = yaml.safe_load(form.get("config") or "") or {}
    except yaml.YAMLError as exc:
        raise MarketError(422, f"config is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise MarketError(422, "config must be a YAML mapping of config sections")
    num = lambda k, d: form.get(k) or d  # noqa: E731
    return TaskIn.model_validate({
        "title": form.get("title", ""), "description": form.get("description", ""),
        "requirements": {"dataset": form.get("dataset", ""), "columns": _split(form.get("columns", "")),
                         "labels": _split(form.get("labels", "")), "min_samples": num("min_samples", 0)},
        "device": {"min_cpu_cores": num("min_cpu_cores", 0), "min_ram_mb": num("min_ram_mb", 0)},
        "start_at": form.get("start_at") or None, "min_owners": num("min_owners", 1),
        "max_owners": num("max_owners", 100), "reward_budget": num("reward_budget", 0), "config": config})


def _curve(points: list[tuple[int, float | None]], width: int = 640, height: int = 260) -> dict[str, Any] | None:
    """An SVG polyline of accuracy per round (drawn by the server; the page has no script)."""
    pts = [(r, v) for r, v in points if v is not None]
    if not pts:
        return None
    pad, n = 40, max(r for r, _ in pts)
    x = lambda r: pad + (width - 2 * pad) * ((r - 1) / max(1, n - 1))  # noqa: E731
    y = lambda v: height - pad - (height - 2 * pad) * v  # noqa: E731
    return {"width": width, "height": height, "pad": pad,
            "polyline": " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in pts),
            "dots": [{"x": round(x(r), 1), "y": round(y(v), 1), "round": r, "value": v} for r, v in pts],
            "ticks": [{"y": round(y(t), 1), "label": f"{t:.0%}"} for t in (0, 0.25, 0.5, 0.75, 1.0)],
            "last_round": n}
