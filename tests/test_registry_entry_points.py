"""Entry-point plug-ins: a class is registered under its entry point's name, a module registers
its own classes, and a plug-in that fails to load or is not a plug-in class is refused in one
line naming it. Each case is a distribution (a .dist-info with entry_points.txt) on sys.path."""

import textwrap

import pytest

from fedops.registry import PluginModel, Registry


@pytest.fixture
def dist(tmp_path, monkeypatch):
    def make(group: str, entries: str, module: str = "") -> None:
        name = f"fedops_ep_{abs(hash(group)) % 10**8}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(module))
        info = tmp_path / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n" + textwrap.dedent(entries).replace("MOD", name))

    monkeypatch.syspath_prepend(str(tmp_path))
    return make


def test_a_class_entry_point_is_registered_under_its_name(dist):
    dist("fedops.test_good", "shiny = MOD:Shiny\n", """
        from fedops.registry import PluginModel
        class Shiny(PluginModel):
            name: str = "shiny"
            level: int = 1
        """)
    registry = Registry("widget", entry_points="fedops.test_good")
    assert "shiny" in registry and registry.keys() == ["shiny"]
    assert registry.build({"name": "shiny", "level": 3}).level == 3


def test_a_broken_or_foreign_entry_point_is_named_in_one_line(dist):
    dist("fedops.test_broken", "broken = MOD:missing\n", "x = 1\n")
    with pytest.raises(ValueError, match=r"widget plug-in 'broken' \(.*:missing, entry point group fedops.test_broken\) failed to load: AttributeError"):
        Registry("widget", entry_points="fedops.test_broken").keys()


def test_an_entry_point_that_is_not_a_plugin_class_is_refused(dist):
    dist("fedops.test_foreign", "thing = MOD:thing\n", "thing = 42\n")
    with pytest.raises(ValueError, match="widget plug-in 'thing' .* is not a fedops plug-in class"):
        Registry("widget", entry_points="fedops.test_foreign").get("thing")


def test_without_a_group_nothing_is_scanned():
    registry = Registry("widget")

    @registry.register("local")
    class Local(PluginModel):
        name: str = "local"

    assert registry.keys() == ["local"]
