"""The package's layers: no module imports upward (at module level or inside a function), and the
training flow holds no round logic of its own."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    # 0: foundations: types, randomness, I/O, errors, plug-in registry, evaluation sums
    "fedops": 0, "fedops.types": 0, "fedops.rng": 0, "fedops.registry": 0, "fedops.errors": 0, "fedops.io": 0,
    "fedops.paths": 0, "fedops.env": 0, "fedops.threads": 0, "fedops.malloc": 0, "fedops.progress": 0, "fedops.failpoints": 0, "fedops.evaluation": 0,
    # 1: algorithms, each a plug-in family or a protocol, pure apart from their own state
    "fedops.privacy": 1, "fedops.secagg": 1, "fedops.compress": 1, "fedops.aggregate": 1, "fedops.attacks": 1,
    "fedops.quality": 1, "fedops.fairness": 1, "fedops.contribution": 1, "fedops.reputation": 1, "fedops.incentives": 1, "fedops.selection": 1, "fedops.partition": 1, "fedops.models": 1, "fedops.data": 1,
    # 2: the config that names them; 3: what a client does; 4: what the server does
    "fedops.config": 2, "fedops.client": 3, "fedops.server": 4,
    # 5: the round, its loop, executors, release; 6: the simulation and tracking around it; 7: the CLI
    "fedops.round": 5, "fedops.simulation": 6, "fedops.tracking": 6, "fedops.cli": 7,
    # 7 too: the marketplace, an application beside the CLI (it triggers the flows' deployments)
    "fedops.market": 7,
}
FLOWS = 7  # flows/ (Prefect) sit above the library; only the CLI, the application's entry point, calls them


def _layer(module: str) -> int | None:
    if module == "flows" or module.startswith("flows."):
        return FLOWS
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")[: len(module.split(".")) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.append(node.module)
    return out


def _modules():
    for path in sorted((ROOT / "fedops").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def test_every_module_has_a_layer():
    assert [m for _, m in _modules() if _layer(m) is None] == []


@pytest.mark.parametrize("path, module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_no_module_imports_upward(path, module):
    mine = _layer(module)
    upward = [(imp, _layer(imp)) for imp in _imports(path, module)
              if _layer(imp) is not None and _layer(imp) > mine]
    assert not upward, f"{module} (layer {mine}) imports {upward}"


def test_the_training_flow_has_no_round_logic():
    """flows/training.py loads, runs the one loop and tracks: no branch on privacy, secure
    aggregation, attacks or FLTrust, and no round or client loop of its own."""
    tree = ast.parse((ROOT / "flows" / "training.py").read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"privacy", "secagg", "simulation", "attack", "needs_reference", "aggregator", "malicious",
                        "codec", "dp", "run_round", "map", "select", "train"}
    assert not any(isinstance(n, ast.While) for n in ast.walk(tree))
    loops = [ast.unparse(n.iter) for n in ast.walk(tree) if isinstance(n, ast.For)]
    import re

    assert not [it for it in loops if re.search(r"\b(range|rounds?|clients|selected|training|plan)\b", it)], loops
