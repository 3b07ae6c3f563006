"""Scenario expectations checked against the recorded run (the CI verdict and exit code).

Every check reads only the recorder's rows and the caller's audit counts, so a verdict can be
reproduced from `metrics.csv` and `events.jsonl` alone.

Data contract: emitters (nodes/, faults.py) record exactly these rows; report.py reads them too.

Samples (`Recorder.sample(t_s, node, metric, value)`), node = a pool, named
`metrics.pool_node(lkm_id, owner_sae)` = "LKM_A/SAE_BOB_001" (home pool or remote slice):
- `pool_keys`            keys available in the pool: a row when the level changed since the
                         pool's last row (checked every `sample_interval`), and every pool
                         at the first pass and at the end of the run; a level holds until
                         the pool's next row (decision 63).
- `pools_changed`        node = an LKM: how many of its pools changed since its last pass,
                         at every pass while it is up (the times its pools were read).
- `pool_threshold_keys`  the pool's threshold-sync level in keys (threshold * pool size);
                         sampled at least once per pool, again whenever it changes.
- `link_buffer_bits`     node = a link ("KM1-KM2"): the bits in its buffer, sampled every
                         `sample_interval` (its books are summary.json `links`).

Events (`Recorder.event(t_s, kind, node, **data)`):
- `sync`      node = the LKM that synced. data: `pool` (pool node), `reason` (scheduled |
              threshold | emergency | manual | retry), `outcome` ("ok": the KM answered,
              possibly with fewer keys than asked; "unreachable": no answer; "no_key": the KMs answered but
              no path's links held key; "error": any other failure, named in `error`),
              `keys_requested`, `keys_received` (int), `duration_s` (float). (A sync its LKM did not live to finish records nothing; a caller
              waiting for it is answered "aborted".)
- `delivery`  node = the LKM that delivered keys to a sender (enc_keys). data: `keys` (int),
              `pool` (pool node), `master` and `slave` (SAE IDs).
- `relay`     node = the home KM of a relayed slice top-up. data: `to` (the asking KM),
              `keys`, `bits`, `hops`, `path` ("KM3-KM2-KM1"), `sites` ("LKM_B>LKM_A": the
              home LKM and the asking one), `delay_s` (from shipping to arrival), `trusted`
              ("KM2": the KMs in between, which saw the keys in the clear; absent for one
              hop); `requested`, `partial` and `held_by` ("links" | "home_reserve") when fewer
              keys came than the sync asked for.
- `relay_failure` node = the home KM. data: `to`, `keys`, `bits`, `cause` ("no_path" |
              "no_key" | "home_reserve": the home pool was at its threshold); or `stranded`
              (keys left SHIPPED at a home LKM that went down).
- `link_state` node = a link. data: `state` (READY | WARNING | CHARGING | EMPTY | DOWN |
              ABORT), `bits`; recorded when a touch of the link finds its state changed.
- `failure`   one failed send. node = the sending SAE. data: `to` (receiver SAE),
              `reason` (short machine-readable cause, e.g. "no_keys", "http_503").
- `consumed`  node = the LKM whose slave read keys (dec_keys). data: `keys`, `master`, `slave`.
- `quota`     node = the LKM that refused a sender over its quota (429). data: `pool`, `master`
              (the sender), `slave` (the receiver), `keys` (asked for).
- `outage`    node = the target ("KM1", "KM1-KM2", "LKM_B"; "partition" for partitions).
              data: `phase` ("start" | "end"), `outage` (down | crash | degrade | partition |
              latency | qber_rise). An outage without `for` has no "end" event.
- Per-request kinds (:data:`PER_REQUEST_KINDS`: `delivery`, `consumed`, `failure`, ...) are
  written to `events.jsonl` like every other, but a run keeps only their counts and sums in
  memory (per node and per hour), so checks and plots read those, never the events.
- (actor and background-task failures are not events: the ActorSystem keeps them, and a run
  with any exits 1 and lists them in summary.json `actor_failures`.)

Audit (`audit` argument, computed by the caller from the key stores and the SAEs' checks):
`reused_key_ids: int` (key IDs delivered more than once), `mismatched_keys: int` (keys whose
bytes differed between sender and receiver).

Counting syncs: `min_syncs` counts completed syncs (outcome "ok"), because it asserts that the
mechanism fired *and* reached the KM; `max_syncs` counts every attempt whatever its outcome,
because it bounds the load on the KM (a retry storm of unreachable syncs must fail it). Each
figure says which of the two it counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nodes.run.scenario import Expectation
from simulator import Recorder, format_duration

#: events that come with every request: a run keeps their running totals, not the events
PER_REQUEST_KINDS = ("delivery", "consumed", "failure", "receive_failure", "replay", "copies",
                     "marked_consumed", "quota")

POOL_KEYS = "pool_keys"
LINK_BUFFER_BITS = "link_buffer_bits"
POOL_THRESHOLD_KEYS = "pool_threshold_keys"
POOLS_CHANGED = "pools_changed"


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """The verdict on one expectation; `figure` is a sentence with the deciding number.
    `passed` is None when it was not evaluated (a served run stopped before it could hold)."""

    name: str
    passed: bool | None
    figure: str


#: expectations that only a run of the scenario's full duration can meet (lower bounds, or an
#: outage's end): a served run stopped early reports them as not evaluated
NEED_FULL_RUN = ("min_syncs", "recovered_within")


#: expectations on the audit of the live key stores and senders (a run's files do not hold it)
NEED_AUDIT = ("no_key_reuse", "all_received_keys_match")


def not_audited(results: Sequence[ExpectationResult], expectations: Sequence[Expectation]
                ) -> list[ExpectationResult]:
    """``results`` rebuilt from a run's files: those that need the audit are not evaluated."""
    why = "not evaluated: rebuilt from the run's files, which hold no audit"
    return [ExpectationResult(r.name, None, why) if e.kind in NEED_AUDIT else r
            for r, e in zip(results, expectations)]


def not_evaluated(results: Sequence[ExpectationResult], expectations: Sequence[Expectation],
                  stopped_s: float, duration_s: float) -> list[ExpectationResult]:
    """``results`` of a run stopped at ``stopped_s`` of ``duration_s``: those that need the full
    duration become not evaluated, the rest stand (invariants and upper bounds hold early)."""
    why = (f"not evaluated: the run was stopped at {format_duration(stopped_s)} of "
           f"{format_duration(duration_s)}")
    return [ExpectationResult(r.name, None, why) if e.kind in NEED_FULL_RUN else r
            for r, e in zip(results, expectations)]


def evaluate(
    expectations: Iterable[Expectation], recorder: Recorder, audit: Mapping[str, object]
) -> list[ExpectationResult]:
    """Check each expectation against the recording and the audit counts, in order."""
    return [_evaluate_one(e, recorder, audit) for e in expectations]


def exit_code(results: Iterable[ExpectationResult]) -> int:
    """Return the process exit code for CI: 0 when every expectation passed, else 1."""
    return 0 if all(r.passed is not False for r in results) else 1


def expectation_name(expectation: Expectation) -> str:
    """Return the expectation as a scenario writes it, e.g. "min_syncs: threshold >= 1"."""
    kind = expectation.kind
    if expectation.reason is not None:
        op = ">=" if kind == "min_syncs" else "<="
        return f"{kind}: {expectation.reason} {op} {expectation.count}"
    if expectation.duration_s is not None:
        return f"{kind}: {format_duration(expectation.duration_s)}"
    if expectation.sender is not None:
        return f"{kind}: {expectation.count} from {expectation.sender}"
    if expectation.count is not None:
        return f"{kind}: {expectation.count}"
    return kind


# A check takes (expectation, recorder, audit) and returns (passed, figure).
Check = Callable[[Expectation, Recorder, Mapping[str, object]], tuple[bool, str]]


def _evaluate_one(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> ExpectationResult:
    passed, figure = _CHECKS[expectation.kind](expectation, recorder, audit)
    return ExpectationResult(expectation_name(expectation), passed, figure)


def _no_key_reuse(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    return _audit_zero(audit, "reused_key_ids", "reused key IDs")


def _keys_match(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    return _audit_zero(audit, "mismatched_keys", "mismatched keys")


def _audit_zero(audit: Mapping[str, object], key: str, what: str) -> tuple[bool, str]:
    value = audit.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return False, f"{what}: not audited (audit[{key!r}] is {value!r}, not an int)"
    if value > 0:
        return False, f"{what}: {value} > 0"
    return True, f"{what}: {value}"


def _max_failed_sends(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    maximum, sender = _required(expectation.count), expectation.sender
    failed = recorder.count_events("failure", sender)
    what = "failed sends" if sender is None else f"failed sends from {sender}"
    if failed > maximum:
        return False, f"{what}: {failed} > max {maximum}"
    return True, f"{what}: {failed} <= max {maximum}"


def _syncs(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    kind, reason = expectation.kind, _required(expectation.reason)
    bound = _required(expectation.count)
    match = {} if reason == "any" else {"reason": reason}
    label = "" if reason == "any" else f"{reason} "
    if kind == "min_syncs":
        done = recorder.count_events("sync", outcome="ok", **match)
        op = ">=" if done >= bound else "<"
        return done >= bound, f"{label}syncs completed (outcome ok): {done} {op} min {bound}"
    tried = recorder.count_events("sync", **match)
    op = "<=" if tried <= bound else ">"
    return tried <= bound, f"{label}sync attempts (any outcome): {tried} {op} max {bound}"


def longest_empty_s(series: list[tuple[float, float]]) -> float:
    """Return the longest time a pool sat at 0 keys, at the resolution of its samples.

    A stretch runs from its first empty reading to the next non-empty one, or to the pool's
    last reading (the end of the run) if it never refilled.
    """
    longest, start = 0.0, None
    for t_s, value in series:
        if value <= 0 and start is None:
            start = t_s
        elif value > 0 and start is not None:
            longest, start = max(longest, t_s - start), None
    if start is not None:
        longest = max(longest, series[-1][0] - start)
    return longest


def _never_empty(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    limit_s = _required(expectation.duration_s)
    pools = recorder.nodes_with(POOL_KEYS)
    if not pools:
        return False, f"no {POOL_KEYS} samples recorded; nothing to check"
    worst, pool = max((longest_empty_s(recorder.series(p, POOL_KEYS)), p) for p in pools)
    limit = format_duration(limit_s)
    if worst == 0:
        return True, f"no pool was empty for a measurable time (limit {limit})"
    op = "<=" if worst <= limit_s else ">"
    figure = f"longest empty stretch: {format_duration(worst)} ({pool}) {op} {limit}"
    return worst <= limit_s, figure


def recovery_s(
    levels: list[tuple[float, float]], thresholds: list[tuple[float, float]], end_s: float,
    passes: list[tuple[float, float]] | None = None,
) -> float | None:
    """Return how long after `end_s` a pool's level first reached its threshold.

    A level holds until the pool's next reading (decision 63). It is read at each of `passes`
    (the `pools_changed` marks of the pool's LKM: the times it was sampled), or, without them
    (a run recorded before the marks), at the readings' own times. The threshold at a pass is
    the latest `pool_threshold_keys` reading at or before it (the first reading, before any).
    None: the pool had not recovered by the last pass.
    """
    at = 0
    current: float | None = None
    for t_s, _ in passes or levels:
        while at < len(levels) and levels[at][0] <= t_s:
            current, at = levels[at][1], at + 1
        if t_s >= end_s and current is not None and current >= _threshold_at(thresholds, t_s):
            return t_s - end_s
    return None


def _threshold_at(thresholds: list[tuple[float, float]], t_s: float) -> float:
    current = thresholds[0][1]
    for at_s, value in thresholds:
        if at_s <= t_s:
            current = value
    return current


def _recovered_within(
    expectation: Expectation, recorder: Recorder, audit: Mapping[str, object]
) -> tuple[bool, str]:
    limit_s = _required(expectation.duration_s)
    ends = [e for e in recorder.iter_events("outage") if e.get("phase") == "end"]
    pools = recorder.nodes_with(POOL_KEYS)
    limit = format_duration(limit_s)
    if not ends:
        return False, "no outage ended during the run; nothing to recover from"
    if not pools:
        return False, f"no {POOL_KEYS} samples recorded; nothing to check"
    worst_s, worst = -1.0, ""
    for end in ends:
        for pool in pools:
            thresholds = recorder.series(pool, POOL_THRESHOLD_KEYS)
            if not thresholds:
                return False, f"no {POOL_THRESHOLD_KEYS} samples for {pool}"
            passes = recorder.series(pool.split("/", 1)[0], POOLS_CHANGED)
            took = recovery_s(recorder.series(pool, POOL_KEYS), thresholds, end.t_s, passes)
            ended = format_duration(end.t_s)
            where = f"{pool} after {end.get('outage')} {end.node} ended at {ended}"
            if took is None:
                return False, f"{where}: not back to its threshold by the end of the recording"
            if took > worst_s:
                worst_s, worst = took, where
    op = "<=" if worst_s <= limit_s else ">"
    figure = f"slowest recovery: {format_duration(worst_s)} ({worst}) {op} {limit}"
    return worst_s <= limit_s, figure


T = TypeVar("T")


def _required(value: T | None) -> T:
    """Return a parameter the scenario model guarantees for this kind of expectation."""
    assert value is not None, "the scenario model requires it for this kind"
    return value


_CHECKS: dict[str, Check] = {
    "no_key_reuse": _no_key_reuse,
    "all_received_keys_match": _keys_match,
    "max_failed_sends": _max_failed_sends,
    "min_syncs": _syncs,
    "max_syncs": _syncs,
    "pool_never_empty_longer_than": _never_empty,
    "recovered_within": _recovered_within,
}
