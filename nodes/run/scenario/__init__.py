"""Scenarios: YAML -> validated, frozen models, every problem named by its path.

:mod:`.schema` holds each part's model, :mod:`.checks` what involves several parts, :mod:`.model`
the whole :class:`Scenario`, :mod:`.loading` reading files and the JSON Schema.
"""

from nodes.run.scenario.base import PathErrors
from nodes.run.scenario.checks import reference_errors, target_kinds
from nodes.run.scenario.links import DecoyParams, Link, RatePoint
from nodes.run.scenario.loading import (
    load_scenario,
    parse_scenario,
    scenario_json_schema,
    write_scenario,
)
from nodes.run.scenario.model import LKMSettings, Scenario, ScenarioError
from nodes.run.scenario.schema import (
                                       BARE_EXPECTATIONS,
                                       KM,
                                       LKM,
                                       SAE,
                                       Defaults,
                                       Expectation,
                                       MailTraffic,
                                       Outage,
                                       ReplayTraffic,
                                       SenderQuota,
                                       SyncCount,
                                       SyncOverride,
                                       SyncPolicy,
)

__all__ = [
    "BARE_EXPECTATIONS", "DecoyParams", "Defaults", "Expectation", "KM", "LKM", "LKMSettings", "Link",
    "MailTraffic", "Outage", "PathErrors", "RatePoint", "ReplayTraffic", "SAE", "Scenario",
    "SenderQuota",
    "ScenarioError", "SyncCount", "SyncOverride", "SyncPolicy", "load_scenario", "write_scenario",
    "parse_scenario", "reference_errors", "scenario_json_schema", "target_kinds",
]
