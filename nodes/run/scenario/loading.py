"""Reading scenario files: YAML in, a validated :class:`~.model.Scenario` or every problem as a
"path: message" line out; and the JSON Schema of a scenario file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nodes.run.scenario.base import PathErrors, error_line
from nodes.run.scenario.model import Scenario, ScenarioError
from nodes.run.scenario.schema import ReplayTraffic


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate the YAML scenario at `path` (raises ScenarioError)."""
    path = Path(path)
    text = ""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ScenarioError([f"{path}: cannot read scenario: {reason}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{path}: {_yaml_problem(exc, text)}"]) from None
    scenario = parse_scenario(data, source=str(path))
    return _resolve_replays(scenario, path.parent)


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Validate already-loaded scenario data; `source` names the root in error messages."""
    if not isinstance(data, dict):
        got = type(data).__name__
        message = f"a scenario is a mapping (name, duration, kms, ...), got {got}"
        raise ScenarioError([f"{source}: {message}"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(error_lines(exc, source)) from None


def write_scenario(scenario: Scenario, out_dir: Path | str) -> Path:
    """Write ``scenario.yaml`` in ``out_dir``: the scenario as run (overrides applied, replay
    paths resolved), which :func:`load_scenario` reads back to an equal scenario."""
    path = Path(out_dir) / "scenario.yaml"
    data = scenario.model_dump(mode="json", by_alias=True, exclude_unset=True)
    path.write_text("# the scenario as run (written by qkdsim)\n"
                    + yaml.dump(data, Dumper=_DUMPER, sort_keys=False), encoding="utf-8")
    return path


def scenario_json_schema() -> dict[str, Any]:
    """Return the JSON schema of a scenario file (YAML keys, durations as strings or numbers)."""
    return Scenario.model_json_schema(by_alias=True, mode="validation")


def _resolve_replays(scenario: Scenario, base_dir: Path) -> Scenario:
    traffic = tuple(
        ReplayTraffic(replay=str(base_dir / t.replay)) if isinstance(t, ReplayTraffic) else t
        for t in scenario.traffic
    )
    return scenario.model_copy(update={"traffic": traffic})


#: libyaml's emitter writes the same bytes as PyYAML's for every scenario here, 4-6x faster (a
#: generated 1,000-LKM scenario: 5.8 -> 1.1 s); PyYAML's when libyaml is missing
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's parser when PyYAML has it: a city's YAML loads ten times faster)
    that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _yaml_problem(exc: yaml.YAMLError, text: str = "") -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    lines = text.splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    if "\t" in line[:mark.column + 1] and "cannot start any token" in problem:
        problem = "a tab character; YAML indents with spaces, never tabs"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


_MESSAGES = {"extra_forbidden": "unknown field", "missing": "required field missing"}


def error_lines(exc: ValidationError, source: str) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if not str(part).startswith("<"))
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, PathErrors):
            lines += [error_line(source, loc + sub, msg) for sub, msg in cause.errors]
        else:
            lines.append(error_line(source, loc, _message(err, cause)))
    return lines


def _message(err: Any, cause: object) -> str:
    if err["type"] in _MESSAGES:
        return _MESSAGES[err["type"]]
    if isinstance(cause, ValueError):
        return str(cause)
    message = str(err["msg"])
    text = message[:1].lower() + message[1:]
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        text += f" (got {value!r})"
    return text

