"""The market's API against the real service (127.0.0.1, a SQLite file): concurrent joins, access
checks, bad input refused with nothing stored, metacharacters stored verbatim and rendered escaped."""

from __future__ import annotations

import copy
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from fedops.config import parse_config
from fedops.market.demo import demo_config, demo_task, devices
from fedops.market.eligibility import binding_of

TABLES = ("market_accounts", "market_datasets", "market_tasks", "market_enrollments")


def counts(svc) -> dict[str, int]:
    con = sqlite3.connect(svc.root / "market.db")
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()


def account(svc, role: str, name: str = "someone", device: dict | None = None) -> dict:
    body = {"role": role, "name": name, **({"device": device} if device else {})}
    r = httpx.post(f"{svc.url}/api/v1/accounts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def auth(acc: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {acc['token']}"}


def fingerprint(config: dict, partition: int, *, name: str = "pima", rows: int = 120) -> dict:
    return {"name": name, "kind": "pima", "columns": ["glucose", "mass", "age", "diabetes"], "rows": rows,
            "labels": {"neg": rows - 40, "pos": 40}, "validation": {"suite": "pima client suite", "success": True},
            "binding": {**binding_of(parse_config(config)), "partition": partition}}


def owner_with_data(svc, config: dict, partition: int, name: str = "owner") -> tuple[dict, str]:
    acc = account(svc, "owner", name, devices(2)[0])
    r = httpx.post(f"{svc.url}/api/v1/me/datasets", json=fingerprint(config, partition), headers=auth(acc))
    assert r.status_code == 201, r.text
    return acc, r.json()["id"]


def publish(svc, req: dict, config: dict, **over) -> dict:
    body = {**demo_task(config, min_owners=1), **over}
    r = httpx.post(f"{svc.url}/api/v1/tasks", json=body, headers=auth(req))
    assert r.status_code == 201, r.text
    return r.json()


def later(hours: float = 2) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).isoformat()


def test_200_concurrent_joins_from_50_owners_enrol_each_once(api_service):
    svc = api_service
    config = demo_config(owners=50, rounds=2)
    req = account(svc, "requester")
    task = publish(svc, req, config, max_owners=50, start_at=later())  # starts in two hours: stays open
    owners = [owner_with_data(svc, config, p, name=f"o{p}") for p in range(50)]
    calls = [(acc, ds) for acc, ds in owners for _ in range(4)]
    random.Random(0).shuffle(calls)

    def join(call):
        acc, ds = call
        with httpx.Client(timeout=120) as http:
            r = http.post(f"{svc.url}/api/v1/tasks/{task['id']}/join", json={"dataset": ds}, headers=auth(acc))
        return acc["id"], r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(join, calls))
    statuses = [s for _, s, _ in results]
    assert len(results) == 200 and not [s for s in statuses if s >= 500], statuses
    assert statuses.count(201) == 50 and statuses.count(409) == 150, sorted(set(statuses))
    assert {o for o, s, _ in results if s == 201} == {acc["id"] for acc, _ in owners}
    assert all("already joined" in body["detail"] for _, s, body in results if s == 409)
    con = sqlite3.connect(svc.root / "market.db")
    rows = con.execute("select owner_id, training_id from market_enrollments where task_id = ?", (task["id"],)).fetchall()
    con.close()
    assert len(rows) == 50 and len({o for o, _ in rows}) == 50 and len({t for _, t in rows}) == 50
    assert httpx.get(f"{svc.url}/api/v1/tasks/{task['id']}").json()["joined"] == 50


def test_owners_and_requesters_act_only_on_their_own(api_service):
    svc = api_service
    config = demo_config(owners=5, rounds=2)
    req_a, req_b = account(svc, "requester", "A"), account(svc, "requester", "B")
    task = publish(svc, req_a, config, start_at=later())
    (owner_a, ds_a), (owner_b, ds_b) = owner_with_data(svc, config, 0), owner_with_data(svc, config, 1)
    url = f"{svc.url}/api/v1"
    joined = httpx.post(f"{url}/tasks/{task['id']}/join", json={"dataset": ds_a}, headers=auth(owner_a)).json()
    tid = joined["training_id"]

    # another owner cannot read or act on A's enrolment, even knowing its training ID
    r = httpx.get(f"{url}/enrollments/{tid}", headers=auth(owner_b))
    assert r.status_code == 404 and "training ID" in r.json()["detail"]
    r = httpx.post(f"{url}/tasks/{task['id']}/leave", json={"training_id": tid}, headers=auth(owner_b))
    assert r.status_code == 404
    assert httpx.get(f"{url}/enrollments/{tid}", headers=auth(owner_a)).json()["state"] == "joined"
    # nor join with A's data set
    r = httpx.post(f"{url}/tasks/{task['id']}/join", json={"dataset": ds_a}, headers=auth(owner_b))
    assert r.status_code == 404 and "no data set" in r.json()["detail"]
    # leaving needs the training ID
    r = httpx.post(f"{url}/tasks/{task['id']}/leave", json={"training_id": "x" * 32}, headers=auth(owner_a))
    assert r.status_code == 404

    # a requester cannot start, cancel or read another requester's task
    for method, path in (("POST", "start"), ("POST", "cancel"), ("GET", "statistics"), ("GET", "model")):
        r = httpx.request(method, f"{url}/tasks/{task['id']}/{path}", headers=auth(req_b))
        assert r.status_code == 403 and "another requester" in r.json()["detail"], (path, r.text)
    web = httpx.get(f"{svc.url}/tasks/{task['id']}/stats", cookies={"fedops_market": req_b["token"]})
    assert web.status_code == 403 and "another requester" in web.text
    # roles, missing and forged tokens
    r = httpx.post(f"{url}/tasks/{task['id']}/start", headers=auth(owner_a))
    assert r.status_code == 403 and "requester account" in r.json()["detail"]
    r = httpx.post(f"{url}/tasks/{task['id']}/join", json={"dataset": ds_a}, headers=auth(req_a))
    assert r.status_code == 403 and "owner account" in r.json()["detail"]
    assert httpx.post(f"{url}/tasks/{task['id']}/start").status_code == 401
    forged = {"authorization": "Bearer " + owner_a["token"][:-2] + "xx"}
    assert httpx.get(f"{url}/me", headers=forged).status_code == 401
    assert httpx.get(f"{url}/tasks/{task['id']}").json()["state"] == "open"

    # tokens are stored hashed: neither token is in the database file
    raw = (svc.root / "market.db").read_bytes() + b"".join(
        p.read_bytes() for p in svc.root.glob("market.db-wal"))
    assert owner_a["token"].encode() not in raw and req_a["token"].encode() not in raw

    # the owner leaves before the start and joins again with a new training ID
    assert httpx.post(f"{url}/tasks/{task['id']}/leave", json={"training_id": tid}, headers=auth(owner_a)).json()["state"] == "left"
    r = httpx.post(f"{url}/tasks/{task['id']}/leave", json={"training_id": tid}, headers=auth(owner_a))
    assert r.status_code == 409 and "already left" in r.json()["detail"]
    again = httpx.post(f"{url}/tasks/{task['id']}/join", json={"dataset": ds_a}, headers=auth(owner_a)).json()
    assert again["training_id"] != tid
    assert httpx.get(f"{url}/enrollments/{tid}", headers=auth(owner_a)).status_code == 404


def _bad_tasks(config: dict) -> list[tuple[str, dict, str]]:
    good = demo_task(config, min_owners=2)

    def with_(**kw):
        out = copy.deepcopy(good)
        for dotted, value in kw.items():
            node, *path = dotted.split("__")
            target = out
            for key in [node, *path][:-1]:
                target = target[key]
            target[[node, *path][-1]] = value
        return out

    return [
        ("unknown field", {**good, "priority": "high"}, "priority: Extra inputs are not permitted"),
        ("unknown nested field", with_(requirements__gpu=True), "requirements.gpu: Extra inputs are not permitted"),
        ("config the models refuse", with_(config__server={"rounds": 0}), "server.rounds"),
        ("unknown config key", with_(config__server={"rounds": 2, "speed": 3}), "server.speed"),
        ("unknown plug-in", with_(config__model={"name": "resnet999"}), "resnet999"),
        ("market-owned config key", with_(config__partition={"num_clients": 5, "name": "iid", "keep": [0]}),
         "partition.keep"),
        ("start time in the past", {**good, "start_at": "2020-01-01T00:00:00Z"}, "is in the past"),
        ("max below min", {**good, "min_owners": 3, "max_owners": 2}, "max_owners = 2 is below min_owners = 3"),
        ("more owners than partitions", {**good, "min_owners": 6}, "min_owners = 6"),
        ("data set mismatch", with_(requirements__dataset="adult"), "must name the same data set"),
        ("metacharacters in an identifier", with_(requirements__dataset="pima'; DROP TABLE market_tasks;--"),
         "requirements.dataset"),
        ("wrong type", {**good, "min_owners": "many"}, "min_owners"),
        ("negative budget", {**good, "reward_budget": -5}, "reward_budget"),
        ("empty title", {**good, "title": ""}, "title"),
        ("title too long", {**good, "title": "x" * 201}, "title"),
        ("initial model not the config's", {**good, "initial_model": "small_cnn"}, "initial_model"),
        ("a section the service owns", with_(config__execution={"max_workers": 4096}), "config sets execution"),
        ("a file on the service's machine", with_(config__data={"name": "pima", "path": "/etc/passwd"}),
         "data.path"),
        ("a data set that reads a file", {**with_(config__data={"name": "tabular", "label": "y",
                                                                "features": ["a"], "classes": ["0", "1"]}),
                                          "requirements": {**good["requirements"], "dataset": "tabular"}},
         "a market task trains on one of"),
        ("too many rounds", with_(config__server={"rounds": 5000}), "server.rounds = 5000"),
        ("deeply nested", with_(config__client={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}),
         "nested deeper than"),
    ]


def test_bad_input_is_refused_with_a_message_and_nothing_stored(api_service):
    svc = api_service
    config = demo_config(owners=5, rounds=2)
    req = account(svc, "requester")
    before = counts(svc)
    url = f"{svc.url}/api/v1"
    for what, body, message in _bad_tasks(config):
        r = httpx.post(f"{url}/tasks", json=body, headers=auth(req))
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert message in str(r.json()["detail"]), (what, r.json())
    # oversized, malformed and mistyped bodies
    r = httpx.post(f"{url}/tasks", content=b'{"title": "' + b"x" * 70_000 + b'"}', headers={
        **auth(req), "content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    r = httpx.post(f"{url}/tasks", content=b"{not json", headers={**auth(req), "content-type": "application/json"})
    assert r.status_code == 422
    for body, message in (({"role": "admin", "name": "x"}, "role"), ({"role": "requester", "name": "x", "device":
                          devices(1)[0]}, "only a data owner"), ({"role": "owner", "name": "x", "token": "t"}, "token")):
        r = httpx.post(f"{url}/accounts", json=body)
        assert r.status_code == 422 and message in str(r.json()["detail"]), r.text
    owner = account(svc, "owner", "o", devices(2)[0])
    for change, message in (({"rows": -1}, "rows"), ({"columns": ["a b"]}, "columns.0: String should match pattern"),
                            ({"labels": {"neg": -3}}, "labels"), ({"binding": {"num_clients": 5, "partitioner": {},
                              "seed": 0, "partition": 7}}, "binding.partition = 7")):
        r = httpx.post(f"{url}/me/datasets", json={**fingerprint(config, 0), **change}, headers=auth(owner))
        assert r.status_code == 422 and message in str(r.json()["detail"]), r.text
    r = httpx.put(f"{url}/me/device", json={**devices(1)[0], "ram_mb": 0}, headers=auth(owner))
    assert r.status_code == 422 and "ram_mb" in str(r.json()["detail"])
    after = counts(svc)
    assert after["market_tasks"] == before["market_tasks"] and after["market_datasets"] == before["market_datasets"]
    assert after["market_accounts"] == before["market_accounts"] + 1  # only the owner made above

    # the web form refuses a config the models refuse, says why, and stores nothing
    r = httpx.post(f"{svc.url}/tasks/new", cookies={"fedops_market": req["token"]}, data={
        "title": "t", "dataset": "pima", "min_owners": "1", "config": "data: pima\nserver: {rounds: 0}\n"})
    assert r.status_code == 422 and "server.rounds" in r.text
    # a YAML alias bomb in the form is refused before anything walks it
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcd", "bcde"))
    r = httpx.post(f"{svc.url}/tasks/new", cookies={"fedops_market": req["token"]}, data={
        "title": "t", "dataset": "pima", "min_owners": "1", "config": "data: pima\n" + bomb})
    assert r.status_code == 422 and "more than 5000 values" in r.text
    assert counts(svc)["market_tasks"] == before["market_tasks"]


def test_metacharacters_are_stored_verbatim_and_rendered_escaped(api_service):
    svc = api_service
    config = demo_config(owners=5, rounds=2)
    nasty = "<script>alert('x')</script> Robert'); DROP TABLE market_tasks;-- & \"quoted\""
    req = account(svc, "requester", nasty)
    task = publish(svc, req, config, title=nasty[:200], description=nasty, start_at=later())
    owner, ds = owner_with_data(svc, config, 2, name=nasty)
    assert httpx.post(f"{svc.url}/api/v1/tasks/{task['id']}/join", json={"dataset": ds},
                      headers=auth(owner)).status_code == 201
    got = httpx.get(f"{svc.url}/api/v1/tasks/{task['id']}").json()
    assert got["title"] == nasty[:200] and got["description"] == nasty
    assert httpx.get(f"{svc.url}/api/v1/me", headers=auth(owner)).json()["name"] == nasty
    assert set(counts(svc)) == set(TABLES)  # every table is still there
    cookies = {"fedops_market": req["token"]}
    for path in ("/", f"/tasks/{task['id']}", f"/tasks/{task['id']}/stats"):
        page = httpx.get(f"{svc.url}{path}", cookies=cookies)
        assert page.status_code == 200, (path, page.text[:500])
        assert "<script>" not in page.text and "&lt;script&gt;alert(" in page.text, path
    stats = httpx.get(f"{svc.url}/tasks/{task['id']}/stats", cookies=cookies).text
    assert stats.count("&lt;script&gt;") >= 2  # the title and the participant's name
