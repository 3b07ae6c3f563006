"""The layout is the architecture: rooms import downwards only, and from another room only the
names its package declares (nodes/__init__.py ROOMS, each room's ``__all__``). Libraries stay in
their rooms: SQLite in the key node's store, aiohttp in the HTTP-facing rooms, matplotlib in the
report. Modules stay small, or say why not."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from nodes import ROOMS

ROOT = Path(__file__).resolve().parent.parent
CODE = sorted([*ROOT.glob("simulator/**/*.py"), *ROOT.glob("nodes/**/*.py"),
               ROOT / "run_scenario.py"])
#: library -> the module paths (prefixes) that may import it
LIBRARIES = {
    "sqlite3": ("nodes/keynode/store/",),
    "aiosqlite": ("nodes/keynode/store/",),
    "matplotlib": ("nodes/run/report.py", "nodes/run/linkplots.py", "nodes/run/poolplots.py",
                   "nodes/sweep/outputs.py"),
    "ray": ("nodes/sweep/engines.py", "nodes/parallel/on_ray.py"),
    "aiohttp": ("nodes/server/", "nodes/traffic/", "nodes/run/builder.py", "nodes/dashboard/"),
    "networkx": ("nodes/network/",),
}
#: modules allowed past MAX_LINES, and why
LONG_MODULES = {
    "tests/test_etsi_conformance.py": "the standard's black-box cases, one test each, in the "
                                      "reference's order",
    "tests/test_scenario.py": "every scenario error a user can make, one test each",
}
MAX_LINES = 400


def room_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] == "simulator":
        return "simulator"
    if parts[0] == "nodes" and len(parts) > 2:
        return f"nodes.{parts[1]}"
    return "nodes" if parts[0] == "nodes" else path.stem


def target_room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "simulator":
        return "simulator"
    if parts[0] == "nodes":
        return "nodes" if len(parts) == 1 else f"nodes.{parts[1]}"
    return None


def imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import in the file, nested ones included."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
    return found


def test_every_room_declares_where_it_stands_and_what_it_offers() -> None:
    for room in ROOMS:
        if room == "run_scenario":
            continue
        package = importlib.import_module(room)
        assert package.__doc__ and package.__all__, room
        assert all(hasattr(package, name) for name in package.__all__), room
    rooms_on_disk = {f"nodes.{p.name}" for p in (ROOT / "nodes").iterdir()
                     if (p / "__init__.py").is_file()}
    assert rooms_on_disk == {room for room in ROOMS if room.startswith("nodes.")}


def layering_problems(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        here = room_of(path)
        for line, module, names in imports(path):
            there = target_room(module)
            where = f"{path.relative_to(ROOT)}:{line}: {module}"
            if there is None or there == here or (here == "nodes" and there.startswith("nodes")):
                continue
            if there not in ROOMS.get(here, ()):
                problems.append(f"{where}: {here} may not import {there}")
            elif module != there:
                problems.append(f"{where}: import from the room's package, {there}")
            else:
                public = set(importlib.import_module(there).__all__)
                problems += [f"{where}: {name} is not in {there}.__all__"
                             for name in names if name not in public]
    return problems


def test_no_module_imports_upwards_across_rooms_or_past_a_rooms_surface() -> None:
    assert layering_problems(CODE) == []


def test_the_layering_check_would_catch_an_upward_import(tmp_path) -> None:
    """The check itself: a key-node module importing the run room is caught."""
    probe = ROOT / "nodes" / "keynode" / "_layering_probe.py"
    probe.write_text("from nodes.run import run\nfrom nodes.network.km import KeyManager\n"
                     "from simulator.clock import VirtualClock\nfrom simulator import Nothing\n")
    try:
        assert layering_problems([probe]) == [
            "nodes/keynode/_layering_probe.py:1: nodes.run: nodes.keynode may not import "
            "nodes.run",
            "nodes/keynode/_layering_probe.py:2: nodes.network.km: nodes.keynode may not import "
            "nodes.network",
            "nodes/keynode/_layering_probe.py:3: simulator.clock: import from the room's "
            "package, simulator",
            "nodes/keynode/_layering_probe.py:4: simulator: Nothing is not in simulator.__all__"]
    finally:
        probe.unlink()


def test_libraries_stay_in_their_rooms() -> None:
    problems = []
    for path in CODE:
        relative = path.relative_to(ROOT).as_posix()
        for line, module, _ in imports(path):
            library = module.split(".")[0]
            allowed = LIBRARIES.get(library)
            if allowed is not None and not relative.startswith(allowed):
                problems.append(f"{relative}:{line}: imports {library}")
    assert problems == []


def test_modules_stay_under_400_lines_or_say_why() -> None:
    sources = [*CODE, *sorted(ROOT.glob("tests/*.py")), *sorted(ROOT.glob("bench/**/*.py"))]
    long = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
            for path in sources if len(path.read_text().splitlines()) > MAX_LINES}
    assert set(long) <= set(LONG_MODULES), long
