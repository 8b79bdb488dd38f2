"""The suite's test order (``scheduling.py``): long tests first, a group's tests together and marked for xdist,
and every collected test kept."""

from __future__ import annotations

import pytest
import scheduling


class FakeItem:
    """The part of ``pytest.Item`` the ordering hook uses: a node id and markers."""

    def __init__(self, nodeid: str, slow: bool = False) -> None:
        self.nodeid = nodeid
        self.markers = [pytest.mark.slow.mark] if slow else []

    def get_closest_marker(self, name: str):
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker) -> None:
        self.markers.append(marker.mark)


def test_long_first_groups_together_nothing_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "LONG", {"t.py::long": 50.0, "t.py::param[b]": 30.0, "t.py::grouped1": 10.0})
    monkeypatch.setattr(scheduling, "_GROUP_OF", {"t.py::grouped1": "g", "t.py::grouped2": "g"})
    names = ["t.py::a", "t.py::grouped2", "t.py::param[a]", "t.py::long", "t.py::b", "t.py::param[b]",
             "t.py::slow", "t.py::grouped1", "t.py::c"]
    items = [FakeItem(n, slow=n == "t.py::slow") for n in names]
    scheduling.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == [
        "t.py::long",  # 50 s
        "t.py::param[b]",  # 30 s by its node id (param[a] is not listed: 0 s)
        "t.py::slow",  # unlisted but marked slow: SLOW_DEFAULT_S (20 s)
        "t.py::grouped2", "t.py::grouped1",  # the group's longest (10 s), in collection order
        "t.py::a", "t.py::param[a]", "t.py::b", "t.py::c",  # the rest as collected
    ]
    groups = {i.nodeid: [m.args[0] for m in i.markers if m.name == "xdist_group"] for i in items}
    assert groups["t.py::grouped1"] == groups["t.py::grouped2"] == ["g"]
    assert all(not g for n, g in groups.items() if not n.startswith("t.py::grouped"))


def test_module_groups_keep_a_file_on_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of a ``MODULE_GROUPS`` file gets that file's group (its module fixture is built once) and
    moves to the place of its longest test; a listed ``GROUPS`` entry wins; other files are untouched."""
    monkeypatch.setattr(scheduling, "LONG", {"m.py::slow": 9.0})
    monkeypatch.setattr(scheduling, "_GROUP_OF", {"m.py::own": "g"})
    monkeypatch.setattr(scheduling, "MODULE_GROUPS", ("m.py",))
    names = ["t.py::a", "m.py::fast", "t.py::b", "m.py::slow", "m.py::own", "m.py::p[1]"]
    items = [FakeItem(n) for n in names]
    scheduling.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == ["m.py::fast", "m.py::slow", "m.py::p[1]",  # the file's group at 9 s
                                         "t.py::a", "t.py::b", "m.py::own"]
    groups = {i.nodeid: [m.args[0] for m in i.markers if m.name == "xdist_group"] for i in items}
    assert groups == {"m.py::fast": ["m.py"], "m.py::slow": ["m.py"], "m.py::p[1]": ["m.py"], "m.py::own": ["g"],
                      "t.py::a": [], "t.py::b": []}


def test_module_groups_name_real_files() -> None:
    """A renamed file would silently lose its group."""
    from conftest import REPO_DIR

    assert all((REPO_DIR / f).is_file() for f in scheduling.MODULE_GROUPS)


def test_function_entries_cover_every_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "LONG", {"t.py::f": 7.0})
    assert scheduling.expected_seconds(FakeItem("t.py::f[x-1]")) == 7.0
    assert scheduling.expected_seconds(FakeItem("t.py::g[x-1]")) == 0.0


def test_grouped_tests_exist(request: pytest.FixtureRequest) -> None:
    """Every test id in ``GROUPS`` is collected by this suite (a renamed test would silently lose its group)."""
    collected = {item.nodeid.split("@", 1)[0] for item in request.session.items}
    if len(collected) < 100:
        pytest.skip("needs the whole suite collected (run without selecting tests)")
    missing = [n for ids in scheduling.GROUPS.values() for n in ids if n not in collected]
    assert not missing, missing
