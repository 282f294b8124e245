from pathlib import Path

from fedops.config import load_config, resolve_config

ROOT = Path(__file__).resolve().parents[2]


def test_deployments_take_a_preset_and_overrides(tmp_path):
    from flows.deployments import build_deployments

    deps = build_deployments(ROOT / "configs" / "tiny.yaml", tmp_path)
    assert sorted(d.name for d in deps) == ["default", "default"]
    assert {d.flow_name for d in deps} == {"fedops-pipeline", "federated-training"}
    for d in deps:
        assert d.parameters == {"config": str(ROOT / "configs" / "tiny.yaml"), "overrides": {},
                                "workdir": str(tmp_path.resolve()), "fresh": False}
        assert set(d._parameter_openapi_schema.properties) == {"config", "overrides", "workdir", "fresh"}
    # a triggered run's parameters resolve to the configured run, overrides merged key by key
    base = load_config(ROOT / "configs" / "tiny.yaml")
    nested = resolve_config(str(ROOT / "configs" / "tiny.yaml"), {"server": {"rounds": 2}})
    dotted = resolve_config("tiny", {"server.rounds": 2})
    assert nested == dotted and nested.server.rounds == 2 and nested.server.fraction == base.server.fraction
    assert nested.model_copy(update={"server": base.server}) == base
    # a mapping naming another plug-in replaces it (the old one's hyperparameters do not carry over)
    switched = resolve_config("tiny", {"server": {"aggregator": {"name": "trimmed_mean", "beta": 0.4}},
                                       "partition": {"name": "iid"}})
    assert switched.server.aggregator.name == "trimmed_mean" and switched.partition.partitioner.name == "iid"
    assert switched.partition.num_clients == base.partition.num_clients
    tuned = resolve_config("tiny", {"partition": {"alpha": 0.3}})
    assert tuned.partition.partitioner.alpha == 0.3 and tuned.partition.partitioner.min_size == 10
