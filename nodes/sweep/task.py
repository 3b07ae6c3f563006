"""One run of a sweep, as a task any engine can carry: a scenario in, the run's files out.

:func:`execute` needs nothing from the machine it runs on but qkdsim: the scenario comes in the
task, the run writes into a temporary folder there, and the files come back as bytes (its
SQLite stores stay behind: they hold key material and are not an output). So a Ray worker on
another host needs no shared filesystem, and every engine writes the same bytes for the same
task. :func:`figures` reads the collected numbers back out of a run's ``summary.json``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nodes.run import parse_scenario, run

#: run outcome -> CSV status
STATUSES = {0: "ok", 1: "expectations_failed"}
#: the statuses of a run that completed (its figures count; a rerun skips it)
COMPLETE = tuple(STATUSES.values())


@dataclass(frozen=True)
class Task:
    run_id: str
    scenario: dict[str, Any]
    crash_once: str | None = None  # fault injection for tests of the engines: see execute()


@dataclass(frozen=True)
class Result:
    run_id: str
    status: str  # ok | expectations_failed | error
    message: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


def execute(task: Task) -> Result:
    """Run the task's scenario in a temporary folder and hand back its files.

    ``crash_once`` names a marker file: the first attempt that finds it missing creates it and
    ends its process at once (as a killed worker would), so a test can show an engine retrying
    a task whose worker died."""
    if task.crash_once is not None and not os.path.exists(task.crash_once):
        Path(task.crash_once).touch()
        os._exit(17)
    try:
        scenario = parse_scenario(task.scenario)
        with tempfile.TemporaryDirectory(prefix=f"qkdsim-sweep-{task.run_id}-") as tmp:
            out = Path(tmp) / "run"
            outcome = asyncio.run(run(scenario, out))
            files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
                     if p.is_file() and p.relative_to(out).parts[0] != "state"}
        failures = "; ".join(outcome.actor_failures)
        return Result(task.run_id, STATUSES.get(outcome.exit_code, "error"), failures, files)
    except Exception as error:  # noqa: BLE001 - a run that fails is a row, not a lost sweep
        last = traceback.extract_tb(error.__traceback__)[-1:]
        where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
        return Result(task.run_id, "error", f"{type(error).__name__}: {error}{where}")


def figures(summary: dict[str, Any], collect: tuple[str, ...]) -> dict[str, float | None]:
    """The collected figures of one run: FIGURES by name (``syncs`` expands to a column per
    reason and outcome), anything else as a dotted path into summary.json."""
    found: dict[str, float | None] = {}
    for name in collect:
        if name == "syncs":
            for reason, outcomes in sorted(summary["totals"].get("syncs", {}).items()):
                for outcome, count in sorted(outcomes.items()):
                    found[f"syncs.{reason}.{outcome}"] = float(count)
        elif name in _NAMED:
            found[name] = _NAMED[name](summary)
        else:
            found[name] = _dotted(summary, name)
    return found


def _syncs(summary: dict[str, Any], completed: bool) -> float:
    return float(sum(count for outcomes in summary["totals"].get("syncs", {}).values()
                     for outcome, count in outcomes.items() if (outcome == "ok") == completed))


def _min_pool(summary: dict[str, Any]) -> float | None:
    lows = [row["min_pool_keys"] for row in summary["nodes"].values()
            if row.get("min_pool_keys") is not None]
    return float(min(lows)) if lows else None


def _utilisation(summary: dict[str, Any]) -> float | None:
    values = [link["utilisation"] for link in summary.get("links", [])
              if link.get("utilisation") is not None]
    return float(max(values)) if values else None


def _dotted(summary: dict[str, Any], path: str) -> float | None:
    value: Any = summary
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


_NAMED: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "failed_sends": lambda s: float(s["totals"]["failed_sends"]),
    "mails_delivered": lambda s: float(s["audit"]["mails_received"]) if s.get("audit") else None,
    "min_pool_keys": _min_pool,
    "link_utilisation": _utilisation,
    "syncs_completed": lambda s: _syncs(s, True),
    "syncs_not_completed": lambda s: _syncs(s, False),
}
