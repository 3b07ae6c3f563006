"""Scenario files: parsing, defaults, error paths, schema, overrides, and durations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nodes.keynode.naming import RESERVED_IDS, sae_id_problem
from nodes.run.scenario import (
    MailTraffic,
    ReplayTraffic,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_json_schema,
)
from simulator.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent

DESIGN_EXAMPLE = """
name: km-outage-6h
seed: 7
duration: 3d
clock: virtual
sample_interval: 10m
defaults: {pool_size: 1000, key_size_bits: 8192, max_keys_per_request: 100,
           sync: {interval: 24h, threshold: 0.10, emergency: 0.05}}
kms:   [{id: KM1, key_rate_bps: 100000}, {id: KM2}, {id: KM3}]
links: [{a: KM1, b: KM2, rate_bps: 150000}, {a: KM2, b: KM3, length_km: 85}]
lkms:  [{id: LKM_A, km: KM1}, {id: LKM_B, km: KM3, pool_size: 500}]
saes:  [{id: SAE_ALICE_001, email: alice@example.com, lkm: LKM_A},
        {id: SAE_BOB_001,   email: bob@example.com,   lkm: LKM_B, pool_size: 200}]
traffic: [{from: SAE_ALICE_001, to: SAE_BOB_001, mails_per_hour: 20, mail_bytes: 1500}]
outages: [{at: 1d, target: KM1, kind: down, for: 6h}, {at: 2d, target: LKM_B, kind: crash}]
expect:  [no_key_reuse, {max_failed_sends: 0}, {min_syncs: {reason: emergency, count: 1}}]
"""


def design_data() -> dict[str, Any]:
    data = yaml.safe_load(DESIGN_EXAMPLE)
    assert isinstance(data, dict)
    return data


def errors_after(change: Callable[[dict[str, Any]], object]) -> list[str]:
    """Apply `change` to the DESIGN example and return the scenario errors it causes."""
    data = copy.deepcopy(design_data())
    change(data)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    return caught.value.errors


# --- valid scenarios ----------------------------------------------------------------------


def test_the_design_example_parses_into_seconds_and_typed_parts() -> None:
    scenario = parse_scenario(design_data())
    assert (scenario.name, scenario.seed, scenario.duration_s) == ("km-outage-6h", 7, 259200.0)
    assert scenario.sample_interval_s == 600.0
    assert scenario.outages[0].at_s == 86400.0 and scenario.outages[0].for_s == 21600.0
    assert scenario.outages[1].for_s is None
    flow = scenario.traffic[0]
    assert isinstance(flow, MailTraffic) and flow.from_sae == "SAE_ALICE_001"
    assert [e.kind for e in scenario.expect] == ["no_key_reuse", "max_failed_sends", "min_syncs"]
    assert (scenario.expect[2].reason, scenario.expect[2].count) == ("emergency", 1)


def test_the_quickstart_scenario_parses_with_the_seed_setup() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert (scenario.seed, scenario.duration_s) == (42, 7 * 86400.0)
    assert [sae.lkm for sae in scenario.saes] == ["LKM_A", "LKM_A"]
    assert scenario.outages[0].at_s == 3.5 * 86400 and scenario.outages[0].for_s == 10 * 3600
    assert scenario.lkm_settings("LKM_A").sync.threshold == 0.10
    assert scenario.expect[-1].kind == "min_syncs" and scenario.expect[-1].reason == "threshold"


def test_lkm_settings_merge_the_defaults_with_the_lkm_overrides() -> None:
    data = design_data()
    data["lkms"][1]["sync"] = {"threshold": 0.2}
    scenario = parse_scenario(data)
    settings = scenario.lkm_settings("LKM_B")
    assert (settings.pool_size, settings.key_size_bits, settings.km) == (500, 8192, "KM3")
    assert (settings.sync.threshold, settings.sync.emergency) == (0.2, 0.05)
    assert scenario.lkm_settings("LKM_A").pool_size == 1000


def test_an_sae_pool_size_falls_back_to_its_lkm() -> None:
    scenario = parse_scenario(design_data())
    assert scenario.sae_pool_size("SAE_BOB_001") == 200
    assert scenario.sae_pool_size("SAE_ALICE_001") == 1000
    with pytest.raises(KeyError):
        scenario.sae_pool_size("SAE_NOBODY")


def test_lookups_answer_for_the_copy_not_the_original_after_model_copy() -> None:
    """Lookups are cached on the frozen model; a copy with other parts must not see them."""
    scenario = parse_scenario(design_data())
    assert scenario.sae("SAE_BOB_001").lkm == "LKM_B"
    assert [s.id for s in scenario.saes_at("LKM_A")] == ["SAE_ALICE_001"]
    assert scenario.lkm_settings("LKM_B").pool_size == 500
    fewer = scenario.model_copy(update={"saes": scenario.saes[:1]})
    assert [s.id for s in fewer.saes_at("LKM_B")] == []
    with pytest.raises(KeyError):
        fewer.sae("SAE_BOB_001")
    bigger = scenario.model_copy(update={"defaults": scenario.defaults.model_copy(
        update={"pool_size": 700})})
    assert bigger.lkm_settings("LKM_A").pool_size == 700
    assert scenario.lkm_settings("LKM_A").pool_size == 1000


def test_link_rate_models_give_fixed_budget_and_curve_rates() -> None:
    data = design_data()
    curve = [{"at": 0, "rate_bps": 10}, {"at": "1h", "rate_bps": 30}]
    data["links"].append({"a": "KM1", "b": "KM3", "rate_curve": curve})
    links = parse_scenario(data).links
    assert links[0].rate_bps_at(0) == 150000
    assert links[1].rate_bps_at(0) == pytest.approx(17_094_000 * 10 ** (-0.2 * 85 / 10))
    assert [links[2].rate_bps_at(t) for t in (0, 3599, 3600, 9999)] == [10, 10, 30, 30]


def test_a_link_outage_may_name_the_link_either_way_round() -> None:
    data = design_data()
    data["outages"].append({"at": "1d", "kind": "degrade", "target": "KM2-KM1", "fraction": 0.5})
    scenario = parse_scenario(data)
    assert scenario.target_kind("KM2-KM1") == "link" and scenario.outages[2].fraction == 0.5


def test_a_relative_replay_path_is_resolved_against_the_scenario_file(tmp_path: Path) -> None:
    data = design_data()
    data["traffic"] = [{"replay": "traces/day1.jsonl"}]
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    flow = load_scenario(path).traffic[0]
    assert isinstance(flow, ReplayTraffic)
    assert Path(flow.replay) == tmp_path / "traces" / "day1.jsonl"


def test_time_scale_one_is_accepted_with_the_virtual_clock() -> None:
    data = design_data() | {"clock": "virtual", "time_scale": 1}
    assert parse_scenario(data).time_scale == 1


def test_another_time_scale_needs_the_wall_clock() -> None:
    errors = errors_after(lambda d: d.update(time_scale=60))
    assert errors == ["time_scale: 60 only applies with clock: wall"]
    assert parse_scenario(design_data() | {"clock": "wall", "time_scale": 60}).time_scale == 60


def test_scenarios_are_frozen() -> None:
    scenario = parse_scenario(design_data())
    with pytest.raises(Exception, match="frozen"):
        scenario.seed = 8  # type: ignore[misc]


# --- errors name their path ----------------------------------------------------------------


def test_an_unknown_km_reference_names_the_lkm_path() -> None:
    errors = errors_after(lambda d: d["lkms"][1].update(km="KM9"))
    assert errors == ["lkms.1.km: unknown KM 'KM9'"]


def test_a_negative_rate_names_the_link_field() -> None:
    errors = errors_after(lambda d: d["links"][0].update(rate_bps=-5))
    assert errors == ["links.0.rate_bps: input should be greater than 0 (got -5)"]


def test_a_bad_duration_names_the_field_and_the_text() -> None:
    errors = errors_after(lambda d: d.update(duration="3x"))
    assert len(errors) == 1 and errors[0].startswith("duration: ") and "'3x'" in errors[0]


def test_a_bad_duration_inside_an_outage_uses_the_yaml_key() -> None:
    errors = errors_after(lambda d: d["outages"][0].update({"for": "6 hours"}))
    assert len(errors) == 1 and errors[0].startswith("outages.0.for: ")


def test_an_unknown_key_is_reported_as_an_unknown_field() -> None:
    errors = errors_after(lambda d: d["kms"][2].update(colour="red"))
    assert errors == ["kms.2.colour: unknown field"]


def test_a_duplicate_id_across_sections_is_reported_at_the_second_use() -> None:
    errors = errors_after(lambda d: d["saes"][1].update(id="LKM_A"))
    assert "saes.1.id: duplicate id 'LKM_A' (also lkms.0)" in errors


def test_a_duplicate_email_is_reported() -> None:
    errors = errors_after(lambda d: d["saes"][1].update(email="ALICE@example.com"))
    assert errors == ["saes.1.email: duplicate email 'ALICE@example.com' (also SAE_ALICE_001)"]


def test_traffic_to_self_is_reported_on_the_receiver() -> None:
    errors = errors_after(lambda d: d["traffic"][0].update(to="SAE_ALICE_001"))
    assert errors == ["traffic.0.to: traffic from 'SAE_ALICE_001' to itself"]


def test_traffic_from_an_unknown_sae_uses_the_from_key() -> None:
    errors = errors_after(lambda d: d["traffic"][0].update({"from": "SAE_NOBODY"}))
    assert errors == ["traffic.0.from: unknown SAE 'SAE_NOBODY'"]


def test_an_outage_on_a_missing_target_is_reported() -> None:
    errors = errors_after(lambda d: d["outages"][0].update(target="KM7"))
    assert errors == [
        "outages.0.target: unknown target 'KM7' (expected a KM or a link 'A-B')"
    ]


def test_an_outage_kind_that_does_not_suit_its_target_is_reported() -> None:
    errors = errors_after(lambda d: d["outages"][1].update(target="KM1"))
    assert errors == ["outages.1.target: 'KM1' is a KM; crash needs an LKM"]


def test_an_outage_after_the_end_of_the_run_is_reported() -> None:
    errors = errors_after(lambda d: d["outages"][0].update(at="3d"))
    assert errors == ["outages.0.at: 3d is not before the end of the run (3d)"]


def test_kind_specific_outage_fields_are_required_and_exclusive() -> None:
    degrade = {"at": "1d", "kind": "degrade", "target": "KM1-KM2", "delay": "1s"}
    errors = errors_after(lambda d: d["outages"].append(degrade))
    assert errors == [
        "outages.2.fraction: required for kind 'degrade'",
        "outages.2.delay: only applies to kind 'latency'",
    ]


def test_a_partition_with_an_unknown_km_names_its_group_position() -> None:
    partition = {"at": "1d", "kind": "partition", "groups": [["KM1"], ["KM2", "KM9"]]}
    errors = errors_after(lambda d: d["outages"].append(partition))
    assert errors == ["outages.2.groups.1.1: unknown KM 'KM9'"]


def test_a_link_needs_exactly_one_rate_model() -> None:
    errors = errors_after(lambda d: d["links"][0].update(length_km=10))
    assert errors == [
        "links.0: give a model, or exactly one of rate_bps, length_km, rate_curve "
        "(got rate_bps, length_km)"
    ]


def test_self_links_and_duplicate_links_are_reported() -> None:
    def change(d: dict[str, Any]) -> None:
        d["links"].append({"a": "KM3", "b": "KM3", "rate_bps": 1})
        d["links"].append({"a": "KM2", "b": "KM1", "rate_bps": 1})

    assert errors_after(change) == [
        "links.2.b: link joins 'KM3' to itself",
        "links.3: duplicate link KM2-KM1 (also links.0)",
    ]


def test_an_unknown_expectation_is_named() -> None:
    errors = errors_after(lambda d: d["expect"].append({"max_failures": 0}))
    assert len(errors) == 1 and errors[0].startswith("expect.3: unknown expectation 'max_failures'")


def test_a_bad_sync_reason_names_the_path_inside_the_expectation() -> None:
    bad = {"min_syncs": {"reason": "panic", "count": 1}}
    errors = errors_after(lambda d: d["expect"].append(bad))
    assert len(errors) == 1 and errors[0].startswith("expect.3.min_syncs.reason: ")


def test_an_emergency_level_above_the_threshold_is_reported_for_the_lkm() -> None:
    errors = errors_after(lambda d: d["lkms"][0].update(sync={"emergency": 0.5}))
    assert errors == ["lkms.0.sync.emergency: 0.5 must not exceed threshold (0.1)"]


def test_a_reserved_word_is_not_an_sae_id() -> None:
    errors = errors_after(lambda d: d["saes"][0].update(id="pools"))
    assert errors[0] == "saes.0.id: 'pools' is a reserved word of the LKM API, not an SAE ID"


@pytest.mark.parametrize("word", sorted(RESERVED_IDS))
def test_every_word_the_lkm_reserves_is_refused_by_validation(word: str) -> None:
    """One list: what the LKM's routes reserve is exactly what a scenario may not name an SAE
    (a scenario that validated with `sync` as an SAE used to crash its run)."""
    errors = errors_after(lambda d: d["saes"][0].update(id=word))
    assert errors[0] == f"saes.0.id: '{word}' is a reserved word of the LKM API, not an SAE ID"
    assert sae_id_problem(word) is not None and sae_id_problem(word.upper()) is None


def test_an_outage_kind_on_a_target_the_table_does_not_list_is_refused() -> None:
    errors = errors_after(lambda d: d["outages"][0].update(kind="down", target="LKM_A"))
    assert errors == ["outages.0.target: 'LKM_A' is an LKM; down needs a KM or a link 'A-B'"]


def test_the_outage_kinds_of_the_schema_are_those_of_the_outage_table() -> None:
    from typing import get_args

    from nodes.run.outages import OUTAGES
    from nodes.run.scenario.schema import OutageKind

    assert set(get_args(OutageKind)) == {kind for kind, _ in OUTAGES}


def test_a_missing_required_field_is_reported() -> None:
    errors = errors_after(lambda d: d.pop("kms"))
    assert errors == ["kms: required field missing"]


def test_every_independent_problem_is_reported_at_once() -> None:
    def change(d: dict[str, Any]) -> None:
        d["lkms"][1]["km"] = "KM9"
        d["saes"][0]["lkm"] = "LKM_Z"

    assert errors_after(change) == [
        "lkms.1.km: unknown KM 'KM9'",
        "saes.0.lkm: unknown LKM 'LKM_Z'",
    ]


def test_the_error_message_joins_all_errors_with_newlines() -> None:
    error = ScenarioError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two" and error.errors == ["a: one", "b: two"]


def test_a_missing_file_is_a_scenario_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ScenarioError, match="absent.yaml: cannot read scenario"):
        load_scenario(path)


def test_broken_yaml_is_a_scenario_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nkms: [{id: KM1}\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken.yaml: invalid YAML at line \d+"):
        load_scenario(path)


def test_a_duplicate_yaml_key_is_refused_rather_than_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(DESIGN_EXAMPLE + "seed: 8\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="duplicate key 'seed'"):
        load_scenario(path)


def test_a_scenario_that_is_not_a_mapping_names_the_source() -> None:
    with pytest.raises(ScenarioError, match=r"^run.yaml: a scenario is a mapping"):
        parse_scenario(["kms"], source="run.yaml")


# --- schema and overrides ------------------------------------------------------------------


def test_the_json_schema_is_a_dict_with_the_yaml_keys() -> None:
    schema = scenario_json_schema()
    assert isinstance(schema, dict) and "duration" in schema["properties"]
    assert "from" in schema["$defs"]["MailTraffic"]["properties"]
    assert "duration_s" not in schema["properties"]


def test_with_overrides_changes_seed_and_duration_and_keeps_the_rest() -> None:
    scenario = parse_scenario(design_data())
    changed = scenario.with_overrides(seed=9, duration_s="2d12h")
    assert (changed.seed, changed.duration_s) == (9, 216000.0)
    assert changed.kms == scenario.kms and scenario.seed == 7
    assert isinstance(changed, Scenario)


def test_with_overrides_leaves_out_outages_after_a_shortened_end() -> None:
    scenario = parse_scenario(design_data())
    starts = [o.at_s for o in scenario.outages]
    changed = scenario.with_overrides(duration_s=2 * 86400)
    assert [o.at_s for o in changed.outages] == [t for t in starts if t < 2 * 86400]
    assert len(changed.outages) < len(scenario.outages)
    notes = scenario.cut_outages(2 * 86400)
    assert len(notes) == len(scenario.outages) - len(changed.outages)
    assert notes[0].startswith("outages.1 (") and "after the end of the run (2d)" in notes[0]


def test_a_bad_until_is_the_flags_error() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(design_data()).with_overrides(duration_s="soon")
    assert caught.value.errors[0].startswith("--until: invalid duration 'soon'")


def test_with_overrides_rejects_a_negative_seed() -> None:
    with pytest.raises(ScenarioError, match="seed: must be a non-negative integer"):
        parse_scenario(design_data()).with_overrides(seed=-1)


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("15m", 900), ("6h", 21600), ("3d", 259200), ("1w", 604800),
        ("1.5h", 5400), ("1d12h", 129600), ("500ms", 0.5), (45, 45), (2.5, 2.5), ("90", 90),
    ],
)
def test_durations_parse_to_seconds(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["-5m", "", "   ", "3x", "6H", "1h1d", "h", "1d12", -1, None, True]
)
def test_bad_durations_are_rejected_naming_the_text(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration " + repr(text).replace("(", r"\(")):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "1d"), (5400, "1h30m"), (0, "0s"), (0.5, "500ms"), (90061, "1d1h1m1s"),
        (1.25, "1.25s"),
    ],
)
def test_durations_format_compactly(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_formatted_durations_parse_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
