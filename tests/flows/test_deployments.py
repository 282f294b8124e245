from pathlib import Path

from fedops.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_deployments_carry_the_resolved_config(tmp_path):
    from flows.deployments import build_deployments

    deps = build_deployments(ROOT / "configs" / "tiny.yaml", tmp_path)
    assert sorted(d.name for d in deps) == ["default", "default"]
    assert {d.flow_name for d in deps} == {"fedops-pipeline", "federated-training"}
    for d in deps:
        assert d.parameters["workdir"] == str(tmp_path)
        # the parameters validate back into the same config: a triggered run is the configured run
        assert parse_config(d.parameters["config"]) == load_config(ROOT / "configs" / "tiny.yaml")
        assert set(d._parameter_openapi_schema.properties) == {"config", "workdir", "fresh"}
