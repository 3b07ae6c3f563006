"""The run room: a scenario in, a verdict out. The scenario schema, the builder that wires a
network from it, the outage table, the harness that runs or serves it, the expectations and
the report (and ``python -m nodes.run.generate``, which writes generated scenarios).
Orchestration (sweeps, partitioned runs, a dashboard) sits on top of this room.

Its public surface is ``__all__``; what runs a scenario imports only these names.
"""

from nodes.run.builder import Network, clear_state, unsupported
from nodes.run.capacity import capacity_warnings
from nodes.run.control import OutageControl, OutageError
from nodes.run.expect import PER_REQUEST_KINDS, ExpectationResult, evaluate
from nodes.run.harness import RunOutcome, format_outcome, report_files, run, serve
from nodes.run.linkrate import LinkRateError, calibration_markdown, link_rate_report
from nodes.run.outages import OUTAGES
from nodes.run.rebuild import RebuildError, rebuild
from nodes.run.regions import plan_for
from nodes.run.report import write_report
from nodes.run.scenario import (
                                ReplayTraffic,
                                Scenario,
                                ScenarioError,
                                load_scenario,
                                parse_scenario,
                                scenario_json_schema,
                                write_scenario,
)
from nodes.run.wiring import Part

__all__ = [
    "OutageControl", "OutageError",
    "ExpectationResult", "Network", "capacity_warnings", "OUTAGES", "RunOutcome", "Scenario", "ScenarioError",
    "LinkRateError", "calibration_markdown", "link_rate_report",
    "evaluate", "format_outcome", "load_scenario", "parse_scenario", "run",
    "scenario_json_schema", "serve", "unsupported", "write_report", "RebuildError", "rebuild",
    "PER_REQUEST_KINDS", "Part", "ReplayTraffic", "clear_state", "plan_for", "report_files", "write_scenario",
]
