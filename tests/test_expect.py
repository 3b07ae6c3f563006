"""Expectations: each passes on a satisfying recording and fails, with its figure, otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from nodes.run.expect import (
    ExpectationResult,
    evaluate,
    exit_code,
    longest_empty_s,
    recovery_s,
)
from nodes.run.scenario import Expectation
from simulator.metrics import Recorder

POOL = "LKM_A/SAE_BOB_001"
CLEAN_AUDIT = {"reused_key_ids": 0, "mismatched_keys": 0}


def check(spec: Any, recorder: Recorder | None = None, audit: Any = None) -> ExpectationResult:
    """Evaluate one expectation written as in a scenario file."""
    expectation = Expectation.model_validate(spec)
    audit = CLEAN_AUDIT if audit is None else audit
    (result,) = evaluate([expectation], recorder or Recorder(), audit)
    return result


def with_syncs(*pairs: tuple[str, str]) -> Recorder:
    recorder = Recorder()
    for i, (reason, outcome) in enumerate(pairs):
        recorder.event(i * 60, "sync", "LKM_A", pool=POOL, reason=reason, outcome=outcome)
    return recorder


def with_levels(levels: list[tuple[float, float]], threshold: float | None = 100) -> Recorder:
    recorder = Recorder()
    if threshold is not None:
        recorder.sample(0, POOL, "pool_threshold_keys", threshold)
    for t_s, value in levels:
        recorder.sample(t_s, POOL, "pool_keys", value)
    return recorder


def with_outage_ending_at(recorder: Recorder, end_s: float) -> Recorder:
    recorder.event(end_s - 3600, "outage", "KM1", phase="start", outage="down")
    recorder.event(end_s, "outage", "KM1", phase="end", outage="down")
    return recorder


# --- audit-based ----------------------------------------------------------------------------


def test_no_key_reuse_passes_when_the_audit_found_none() -> None:
    assert check("no_key_reuse") == ExpectationResult("no_key_reuse", True, "reused key IDs: 0")


def test_no_key_reuse_fails_with_the_reused_count() -> None:
    result = check("no_key_reuse", audit={"reused_key_ids": 3, "mismatched_keys": 0})
    assert not result.passed and result.figure == "reused key IDs: 3 > 0"


def test_an_expectation_without_its_audit_count_fails_rather_than_passes() -> None:
    result = check("all_received_keys_match", audit={})
    assert not result.passed and "not audited" in result.figure


def test_all_received_keys_match_passes_and_fails_on_the_mismatch_count() -> None:
    assert check("all_received_keys_match").passed
    result = check("all_received_keys_match", audit={"reused_key_ids": 0, "mismatched_keys": 2})
    assert not result.passed and result.figure == "mismatched keys: 2 > 0"


# --- failed sends and syncs -----------------------------------------------------------------


def test_max_failed_sends_counts_failure_events() -> None:
    recorder = Recorder()
    assert check({"max_failed_sends": 0}, recorder).figure == "failed sends: 0 <= max 0"
    for t_s in (1, 2, 3):
        recorder.event(t_s, "failure", "SAE_ALICE_001", to="SAE_BOB_001", reason="no_keys")
    result = check({"max_failed_sends": 0}, recorder)
    assert not result.passed and result.figure == "failed sends: 3 > max 0"
    assert check({"max_failed_sends": 3}, recorder).passed


def test_min_syncs_counts_only_completed_syncs_of_the_reason() -> None:
    recorder = with_syncs(("threshold", "unreachable"), ("threshold", "error"), ("scheduled", "ok"))
    result = check({"min_syncs": {"reason": "threshold", "count": 1}}, recorder)
    assert not result.passed
    assert result.figure == "threshold syncs completed (outcome ok): 0 < min 1"


def test_min_syncs_passes_once_enough_syncs_completed() -> None:
    recorder = with_syncs(("threshold", "unreachable"), ("threshold", "ok"))
    result = check({"min_syncs": {"reason": "threshold", "count": 1}}, recorder)
    assert result.passed and result.figure == "threshold syncs completed (outcome ok): 1 >= min 1"
    assert result.name == "min_syncs: threshold >= 1"


def test_min_syncs_with_reason_any_counts_every_reason() -> None:
    recorder = with_syncs(("threshold", "ok"), ("emergency", "ok"), ("manual", "unreachable"))
    assert check({"min_syncs": {"reason": "any", "count": 2}}, recorder).passed
    assert not check({"min_syncs": {"reason": "any", "count": 3}}, recorder).passed


def test_max_syncs_counts_every_attempt_whatever_its_outcome() -> None:
    recorder = with_syncs(("emergency", "ok"), ("emergency", "unreachable"), ("emergency", "error"))
    result = check({"max_syncs": {"reason": "emergency", "count": 2}}, recorder)
    assert not result.passed
    assert result.figure == "emergency sync attempts (any outcome): 3 > max 2"
    assert check({"max_syncs": {"reason": "emergency", "count": 3}}, recorder).passed


# --- pool levels ----------------------------------------------------------------------------


def test_longest_empty_runs_from_the_first_empty_sample_to_the_refill() -> None:
    series = [(0, 5), (600, 0), (1200, 0), (1800, 3), (2400, 0), (3000, 1)]
    assert longest_empty_s(series) == 1200


def test_an_empty_stretch_that_never_ends_runs_to_the_last_sample() -> None:
    assert longest_empty_s([(0, 5), (600, 0), (4200, 0)]) == 3600


def test_pool_never_empty_longer_than_passes_within_the_limit() -> None:
    recorder = with_levels([(0, 5), (600, 0), (1200, 0), (1800, 3)])
    result = check({"pool_never_empty_longer_than": "30m"}, recorder)
    assert result.passed and result.figure == f"longest empty stretch: 20m ({POOL}) <= 30m"


def test_pool_never_empty_longer_than_fails_with_the_longest_stretch() -> None:
    recorder = with_levels([(0, 5), (600, 0), (1200, 0), (1800, 3)])
    result = check({"pool_never_empty_longer_than": "10m"}, recorder)
    assert not result.passed and result.figure == f"longest empty stretch: 20m ({POOL}) > 10m"


def test_pool_never_empty_longer_than_fails_without_pool_samples() -> None:
    result = check({"pool_never_empty_longer_than": "1h"}, Recorder())
    assert not result.passed and "no pool_keys samples" in result.figure


def test_recovery_is_measured_from_the_outage_end_to_the_threshold() -> None:
    levels = [(3000, 40), (3600, 50), (4200, 80), (5400, 500)]
    assert recovery_s(levels, [(0, 100)], end_s=3600) == 1800
    assert recovery_s(levels, [(0, 100)], end_s=6000) is None
    assert recovery_s(levels, [(0, 100), (4000, 60)], end_s=3600) == 600


def test_recovered_within_passes_when_every_pool_recovers_in_time() -> None:
    recorder = with_outage_ending_at(with_levels([(3600, 50), (4200, 80), (5400, 500)]), 3600)
    result = check({"recovered_within": "1h"}, recorder)
    assert result.passed
    assert result.figure == f"slowest recovery: 30m ({POOL} after down KM1 ended at 1h) <= 1h"


def test_recovered_within_fails_with_the_slowest_recovery() -> None:
    recorder = with_outage_ending_at(with_levels([(3600, 50), (4200, 80), (5400, 500)]), 3600)
    result = check({"recovered_within": "15m"}, recorder)
    assert not result.passed
    assert result.figure == f"slowest recovery: 30m ({POOL} after down KM1 ended at 1h) > 15m"


def test_recovered_within_fails_when_a_pool_never_recovers() -> None:
    recorder = with_outage_ending_at(with_levels([(3600, 50), (4200, 80)]), 3600)
    result = check({"recovered_within": "6h"}, recorder)
    assert not result.passed
    assert "not back to its threshold by the end of the recording" in result.figure


def test_recovered_within_fails_when_no_outage_ended() -> None:
    result = check({"recovered_within": "6h"}, with_levels([(0, 500)]))
    assert not result.passed
    assert result.figure == "no outage ended during the run; nothing to recover from"


def test_recovered_within_fails_without_threshold_samples() -> None:
    recorder = with_outage_ending_at(with_levels([(3600, 500)], threshold=None), 3600)
    result = check({"recovered_within": "6h"}, recorder)
    assert not result.passed and result.figure == f"no pool_threshold_keys samples for {POOL}"


# --- the whole list -------------------------------------------------------------------------


def test_evaluate_keeps_the_scenario_order_and_exit_code_reflects_any_failure() -> None:
    recorder = Recorder()
    recorder.event(5, "failure", "SAE_ALICE_001", to="SAE_BOB_001", reason="no_keys")
    specs: list[Any] = ["no_key_reuse", {"max_failed_sends": 0}, {"recovered_within": "2h"}]
    results = evaluate([Expectation.model_validate(s) for s in specs], recorder, CLEAN_AUDIT)
    names = ["no_key_reuse", "max_failed_sends: 0", "recovered_within: 2h"]
    assert [r.name for r in results] == names
    assert [r.passed for r in results] == [True, False, False]
    assert exit_code(results) == 1
    assert exit_code(results[:1]) == 0


@pytest.mark.parametrize("spec", ["no_key_reuse", {"max_failed_sends": 2}])
def test_an_expectation_result_is_a_frozen_value(spec: Any) -> None:
    result = check(spec)
    with pytest.raises(AttributeError):
        result.passed = False  # type: ignore[misc]
