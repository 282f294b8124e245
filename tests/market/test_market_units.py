"""The market's pieces on their own: eligibility (hand cases), the schema migrations, the
training config a task runs with (validated by the training config models)."""

from __future__ import annotations

import sqlalchemy as sa

from fedops.config import parse_config
from fedops.market import db
from fedops.market.demo import demo_config, demo_task
from fedops.market.eligibility import binding_of, unmet
from fedops.market.service import training_config


def _spec(config):
    task = demo_task(config, min_owners=2)
    return {**task, "binding": binding_of(parse_config(config))}


def _fp(config, **over):
    fp = {"kind": "pima", "columns": ["glucose", "mass", "age", "diabetes"], "rows": 100,
          "labels": {"neg": 60, "pos": 40}, "validation": {"suite": "s", "success": True, "failed": []},
          "binding": {**binding_of(parse_config(config)), "partition": 1}}
    return {**fp, **over}


DEVICE = {"cpu_cores": 2, "ram_mb": 2000, "storage_mb": 10, "bandwidth_mbps": 5}


def test_eligibility_names_each_unmet_requirement():
    config = demo_config(owners=5, rounds=2)
    spec = _spec(config)
    assert unmet(spec=spec, fingerprint=_fp(config), device=DEVICE) == []
    assert unmet(spec=spec, fingerprint=_fp(config, kind="adult"), device=DEVICE) == [
        "data set kind is 'adult'; the task needs 'pima'"]
    assert unmet(spec=spec, fingerprint=_fp(config, columns=["glucose"]), device=DEVICE) == [
        "missing required columns: mass, age"]
    assert unmet(spec=spec, fingerprint=_fp(config, rows=49), device=DEVICE) == [
        "49 samples; the task needs at least 50"]
    assert unmet(spec=spec, fingerprint=_fp(config, labels={"neg": 3, "maybe": 2}), device=DEVICE) == [
        "labels maybe are outside the task's label set {neg, pos}"]
    failed = _fp(config, validation={"suite": "s", "success": False, "failed": ["glucose in range"]})
    assert unmet(spec=spec, fingerprint=failed, device=DEVICE) == [
        "the data set failed validation (glucose in range); the task needs a validated data set"]
    assert unmet(spec=spec, fingerprint=_fp(config), device={**DEVICE, "cpu_cores": 0.5}) == [
        "device has 0.5 CPU cores; the task needs at least 1 CPU cores"]
    assert unmet(spec=spec, fingerprint=_fp(config), device=None) == [
        "no device profile; the task needs at least 1 CPU cores"]
    other = demo_config(owners=6, rounds=2)
    why = unmet(spec=spec, fingerprint=_fp(other), device=DEVICE)
    assert len(why) == 1 and "'num_clients': 6" in why[0] and "'num_clients': 5" in why[0]


def test_migrations_create_the_tables_beside_the_ledger_and_keep_records(tmp_path):
    from fedops.reputation import Ledger, LedgerEvent

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ledger = Ledger(url)
    ledger.record(task="t", run="r", round_idx=1, events=[LedgerEvent("a", "completed")])
    engine = db.make_engine(url)
    assert db.current_revision(engine) is None
    db.migrate(engine)
    assert db.current_revision(engine) == "0001_market"
    with engine.begin() as conn:
        conn.execute(sa.text("insert into market_accounts (id, role, name, token_hash, created_at) "
                             "values ('x', 'owner', 'n', 'h', 0)"))
    db.migrate(engine)  # an upgrade at head: nothing changes, nothing is lost
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from market_accounts")).scalar() == 1
    assert len(ledger.events(task="t")) == 1
    # the ORM and the migration agree on every table's columns
    inspector = sa.inspect(engine)
    for table in db.Base.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}
    ledger.dispose()
    engine.dispose()


def test_the_training_config_trains_the_enrolled_partitions_under_the_owners_names():
    config = demo_config(owners=5, rounds=2)
    enrolled = [{"partition": p, "owner": f"owner-{p}", "device": {**DEVICE, "speed": 1.0}} for p in (0, 3, 4)]
    out = training_config(config, enrolled=enrolled, ledger="sqlite:///x.db", task_id="a" * 32, reward_budget=90)
    cfg = parse_config(out)
    assert cfg.partition.keep == [0, 3, 4] and cfg.partition.clients == 3 and cfg.partition.num_clients == 5
    assert cfg.reputation.client_ids == ["owner-0", "owner-3", "owner-4"] and cfg.reputation.enabled
    assert cfg.reputation.task == "market-" + "a" * 32 and cfg.incentives.budget == 90
    assert cfg.devices.source == "table" and len(cfg.devices.table) == 3
    assert config["partition"] == {"num_clients": 5, "name": "iid"}  # the requester's config is untouched


def test_start_rules_cancel_start_by_hand_and_the_written_config(tmp_path):
    """A start time that comes with too few owners cancels the task (the launcher's tick, no
    Prefect needed for that); min_owners without a start time makes it due; a requester's start
    writes the training config and closes enrolment."""
    import yaml

    from fedops.market.launcher import Launcher
    from fedops.market.schemas import AccountIn, DatasetIn, TaskIn
    from fedops.market.service import Market, MarketError

    market = Market.at(tmp_path / "market")
    config = demo_config(owners=5, rounds=2)
    req, _ = market.register(AccountIn(role="requester", name="r"))
    timed = market.publish(req, TaskIn.model_validate({**demo_task(config, min_owners=2),
                                                       "start_at": "2999-01-01T00:00:00Z"}))
    by_count = market.publish(req, TaskIn.model_validate(demo_task(config, min_owners=2)))
    owners = []
    for p in range(2):
        o, _ = market.register(AccountIn(role="owner", name=f"o{p}", device=DEVICE))
        ds = market.add_dataset(o, DatasetIn.model_validate({"name": "d", **_fp(config) | {
            "binding": {**binding_of(parse_config(config)), "partition": p}}}))
        owners.append((o, ds))
    market.join(owners[0][0], timed.id, owners[0][1].id)
    assert market.due() == []
    assert ("cancel", timed.id) in market.due(now=32503680001)  # when the start time comes
    with market.session() as s:  # the start time comes with one owner of the two needed
        s.get(type(timed), timed.id).start_at = 1.0
    Launcher(market).tick()  # the service's tick, once
    assert market.task(timed.id).state == "cancelled"
    assert "fewer owners than min_owners" in market.task(timed.id).note
    market.join(owners[0][0], by_count.id, owners[0][1].id)
    assert market.due() == []
    market.join(owners[1][0], by_count.id, owners[1][1].id)
    assert market.due() == [("start", by_count.id)]
    # another requester cannot start it; its requester can
    other, _ = market.register(AccountIn(role="requester", name="x"))
    try:
        market.begin_start(by_count.id, requester=other)
        raise AssertionError("started another requester's task")
    except MarketError as exc:
        assert exc.status == 403
    task = market.begin_start(by_count.id, requester=req)
    assert task.state == "starting"
    written = yaml.safe_load(market.config_path(task.id).read_text())
    assert written["partition"]["keep"] == [0, 1]
    assert written["reputation"]["client_ids"] == [owners[0][0].id, owners[1][0].id]
    try:
        market.join(owners[1][0], by_count.id, owners[1][1].id)
        raise AssertionError("joined a started task")
    except MarketError as exc:
        assert exc.status == 409 and "starting" in exc.message
    market.dispose()


def test_the_statistics_page_renders_rounds_without_an_evaluation():
    """With server.eval_every > 1 a round has no test accuracy: the table shows a dash."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from fedops.market.app import TEMPLATES, _curve, _when

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["when"] = _when
    stats = {"training_state": "Running", "flow_runs": [], "run_id": None, "model": None, "participants": [],
             "rounds": [{"round": 1, "clients/aggregated": 3.0}, {"round": 2, "test/accuracy": 0.7, "test/loss": 0.5,
                                                                  "clients/aggregated": 3.0}]}
    task = {"title": "t", "state": "launched", "note": None, "id": "x"}
    html = env.get_template("stats.html").render(me=None, task=task, stats=stats,
                                                 curve=_curve([(1, None), (2, 0.7)]))
    assert "<td>1</td><td>—</td><td>—</td><td>3</td>" in html and "0.7000" in html
