"""A sweep file: a base scenario, what to vary, over which seeds, and what to collect.

```yaml
scenario: ../outages/km_down_emergency.yaml   # relative to this file
vary:                                          # a grid: every combination
  defaults.pool_size: [150, 300]
  outages.0.for: [6h, 19h]
zip:                                           # optional: lists of one length, varied together
  defaults.sync.threshold: [0.1, 0.2]
  defaults.sync.emergency: [0.05, 0.1]
seeds: 5                                       # seeds 0..4, or a list of seeds
collect: [failed_sends, min_pool_keys]         # optional; default: FIGURES
```

A dotted path names a place in the scenario as its YAML writes it (`outages.0.for`: the first
outage's `for`); it is checked against the scenario's JSON Schema, so a misspelt path is an
error naming it before anything runs. Each variant is then validated as a scenario: one that is
invalid is reported with its parameters, and the others still run.

A run is keyed by a hash of the base scenario, the variant's parameters and the seed
(:attr:`RunSpec.run_id`): a sweep run again into the same folder skips the runs it finds done.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nodes.run import ScenarioError, parse_scenario, scenario_json_schema

#: what a sweep collects from each run's summary.json by default (the CSV has them all)
FIGURES = ("failed_sends", "mails_delivered", "min_pool_keys", "link_utilisation",
           "syncs_completed", "syncs_not_completed", "syncs")


class SweepError(ValueError):
    """The sweep file is unusable; ``errors`` name each problem (the CLI exits 2)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a variant's parameters and a seed, and its scenario (or why the
    variant is not a valid scenario)."""

    params: tuple[tuple[str, Any], ...]
    seed: int
    scenario: dict[str, Any]
    run_id: str
    invalid: str | None = None


@dataclass(frozen=True)
class Sweep:
    name: str
    base: dict[str, Any]
    vary: tuple[tuple[str, tuple[Any, ...]], ...]
    zipped: tuple[tuple[str, tuple[Any, ...]], ...]
    seeds: tuple[int, ...]
    collect: tuple[str, ...]

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.vary + self.zipped)

    def runs(self) -> list[RunSpec]:
        """Every (variant, seed), variants in grid order, then seeds."""
        axes: list[list[tuple[tuple[str, Any], ...]]] = [
            [((path, value),) for value in values] for path, values in self.vary]
        if self.zipped:
            length = len(self.zipped[0][1])
            axes.append([tuple((path, values[i]) for path, values in self.zipped)
                         for i in range(length)])
        base_text = json.dumps(self.base, sort_keys=True, default=str)
        runs = []
        for combination in itertools.product(*axes):
            params = tuple(pair for group in combination for pair in group)
            variant, invalid = _variant(self.base, params)  # checked once: seeds are valid
            for seed in self.seeds:
                key = json.dumps({"base": base_text, "params": params, "seed": seed},
                                 sort_keys=True, default=str)
                run_id = hashlib.sha256(key.encode()).hexdigest()[:12]
                runs.append(RunSpec(params, seed, {**variant, "seed": seed}, run_id, invalid))
        return runs


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file (SweepError names every problem)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SweepError([f"{path}: {error}"]) from None
    if not isinstance(data, dict):
        raise SweepError([f"{path}: a sweep file is a mapping (scenario, vary, seeds, ...)"])
    errors = [f"unknown field {key!r} (known: scenario, vary, zip, seeds, collect, name)"
              for key in data if key not in ("scenario", "vary", "zip", "seeds", "collect", "name")]
    base = _base(Path(path), data.get("scenario"), errors)
    vary = _axes(data.get("vary") or {}, "vary", errors)
    zipped = _axes(data.get("zip") or {}, "zip", errors)
    if len({len(values) for _, values in zipped}) > 1:
        errors.append("zip: every list must have the same length")
    if not vary and not zipped:
        errors.append("vary: name at least one dotted path with a list of values")
    seeds = _seeds(data.get("seeds", 1), errors)
    collect = data.get("collect") or list(FIGURES)
    if not isinstance(collect, list) or not all(isinstance(c, str) and c for c in collect):
        errors.append("collect: a list of figure names or dotted paths into summary.json")
        collect = list(FIGURES)
    if base is not None:
        schema = scenario_json_schema()
        errors += [f"{section}: {path}: {problem}" for section, axes in (("vary", vary),
                   ("zip", zipped)) for path, _ in axes
                   if (problem := path_problem(schema, path, base)) is not None]
    if errors or base is None:
        raise SweepError(errors)
    name = str(data.get("name") or Path(path).stem)
    return Sweep(name, base, vary, zipped, seeds, tuple(collect))


def path_problem(schema: dict[str, Any], path: str, base: dict[str, Any]) -> str | None:
    """Why ``path`` names no place in a scenario (None when it does)."""
    node: dict[str, Any] = schema
    value: Any = base
    for part in path.split("."):
        node = _resolve(schema, node)
        if part.isdigit():
            items = node.get("items") or next(
                (s.get("items") for s in node.get("anyOf", []) if "items" in s), None)
            if items is None:
                return f"{part!r} indexes something that is not a list"
            if not isinstance(value, list) or int(part) >= len(value):
                return f"index {part} is past the end of the scenario's list"
            node, value = items, value[int(part)]
            continue
        properties = _properties(schema, node)
        if part not in properties:
            known = ", ".join(sorted(properties)) or "none"
            return f"no field {part!r} here (known: {known})"
        node = properties[part]
        value = value.get(part) if isinstance(value, dict) else None
    return None


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``data`` (mappings on the way are made when missing)."""
    parts = path.split(".")
    here: Any = data
    for part, following in zip(parts, parts[1:]):
        if part.isdigit():
            here = here[int(part)]
        else:
            here = here.setdefault(part, [] if following.isdigit() else {})
    last = parts[-1]
    if last.isdigit():
        here[int(last)] = value
    else:
        here[last] = value


def _variant(base: dict[str, Any], params: tuple[tuple[str, Any], ...]
             ) -> tuple[dict[str, Any], str | None]:
    """The base scenario with ``params`` set, and why it is not a valid scenario (or None)."""
    scenario = copy.deepcopy(base)
    for path, value in params:
        set_path(scenario, path, value)
    try:
        parse_scenario(scenario)
    except ScenarioError as error:
        return scenario, "; ".join(error.errors)
    return scenario, None


def _base(path: Path, name: object, errors: list[str]) -> dict[str, Any] | None:
    if not isinstance(name, str) or not name:
        errors.append("scenario: the base scenario's file, relative to the sweep file")
        return None
    file = (path.parent / name).resolve()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        parse_scenario(data)
    except OSError as error:
        errors.append(f"scenario: {error}")
        return None
    except (yaml.YAMLError, ScenarioError) as error:
        errors.append(f"scenario: {file.name} is not a valid scenario: {error}")
        return None
    return data if isinstance(data, dict) else None


def _axes(raw: object, section: str, errors: list[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(raw, dict):
        errors.append(f"{section}: a mapping of dotted paths to lists of values")
        return ()
    axes = []
    for path, values in raw.items():
        if not isinstance(values, list) or not values:
            errors.append(f"{section}: {path}: a non-empty list of values")
            continue
        axes.append((str(path), tuple(values)))
    return tuple(axes)


def _seeds(raw: object, errors: list[str]) -> tuple[int, ...]:
    if isinstance(raw, bool) or not isinstance(raw, (int, list)):
        errors.append("seeds: a count (seeds 0..n-1) or a list of seeds")
        return (0,)
    if isinstance(raw, int):
        if raw < 1:
            errors.append("seeds: the count must be at least 1")
            return (0,)
        return tuple(range(raw))
    if not raw or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw):
        errors.append("seeds: a list of seeds is a non-empty list of integers >= 0")
        return (0,)
    return tuple(raw)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _properties(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The fields a mapping in the schema may hold (through anyOf/allOf of mappings)."""
    node = _resolve(schema, node)
    found = dict(node.get("properties", {}))
    for option in node.get("anyOf", []) + node.get("allOf", []):
        found.update(_properties(schema, option))
    return found
