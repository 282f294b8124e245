"""The marketplace's HTTP client: what a requester's or a data owner's program calls (the demo's
simulated owners and the tests use it too). Every method is one API call; a refused call raises
:class:`MarketClientError` with the service's status and message."""

from __future__ import annotations

from typing import Any

import httpx

from fedops.errors import FedopsError


class MarketClientError(FedopsError):
    """A refused call (``status``: the HTTP status, 0 when no service answered; ``detail``: why)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}" if status else str(detail))
        self.status, self.detail = status, detail


def _send(http: httpx.Client, method: str, path: str, **kw) -> httpx.Response:
    try:
        return http.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise MarketClientError(0, f"no market service answered at {http.base_url}: {exc} (start one with "
                                   "`fedops market serve`)") from None


class MarketClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.url, self.token = url.rstrip("/"), token
        self._http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MarketClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        r = _send(self._http, method, path, headers=headers, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise MarketClientError(r.status_code, detail)
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    # accounts
    @classmethod
    def register(cls, url: str, *, role: str, name: str, device: dict[str, Any] | None = None) -> "MarketClient":
        """A new account; the returned client holds its token (``.token``) and id (``.account_id``)."""
        with httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=60) as http:
            r = _send(http, "POST", "/accounts", json={"role": role, "name": name, **({"device": device} if device else {})})
        if r.status_code >= 400:
            raise MarketClientError(r.status_code, r.json().get("detail"))
        body = r.json()
        client = cls(url, body["token"])
        client.account_id = body["id"]
        return client

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/me")

    # owners
    def set_device(self, device: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/me/device", json=device)

    def add_dataset(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/me/datasets", json=fingerprint)

    def eligible_tasks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/me/tasks")

    def eligibility(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{task_id}/eligibility")

    def join(self, task_id: str, dataset: str) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task_id}/join", json={"dataset": dataset})

    def leave(self, task_id: str, training_id: str) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task_id}/leave", json={"training_id": training_id})

    def enrollment(self, training_id: str) -> dict[str, Any]:
        return self._call("GET", f"/enrollments/{training_id}")

    def profile(self) -> dict[str, Any]:
        return self._call("GET", "/me/profile")

    # requesters
    def publish(self, task: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/tasks", json=task)

    def task(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{task_id}")

    def tasks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/tasks")

    def start(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task_id}/start")

    def statistics(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{task_id}/statistics")

    def download_model(self, task_id: str) -> bytes:
        return self._call("GET", f"/tasks/{task_id}/model")
