"""The golden outage scenarios: each passes, repeats byte for byte, and has a broken twin that fails.

A twin is its golden scenario with one expectation tightened past what the run can meet, which
shows that the expectation can fail. CI runs all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nodes.run.harness import run
from nodes.run.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = sorted((ROOT / "scenarios" / "outages").glob("*.yaml"))
TWINS = {  # scenario -> the tightened expectation its twin carries instead of the golden ones
    "km_down_emergency": {"min_syncs": {"reason": "emergency", "count": 5}},
    "link_cut_reroute": {"max_syncs": {"reason": "threshold", "count": 2}},
    "link_cut_no_path": {"max_failed_sends": 100},
    "lkm_crash": {"max_failed_sends": 5},
    "partition_heal": {"max_syncs": {"reason": "any", "count": 1}},
    # the quota held Mallory back thousands of times: a bound of 100 refusals cannot hold
    "greedy_sender": {"max_failed_sends": {"count": 100, "sender": "SAE_MALLORY_001"}},
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_there_are_at_least_five_golden_outage_scenarios_each_with_a_twin() -> None:
    assert len(GOLDEN) >= 5
    assert {path.stem for path in GOLDEN} == set(TWINS)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
async def test_a_golden_outage_scenario_passes_and_repeats_exactly(path: Path, tmp_path) -> None:
    """...and repeats exactly with ``transport: direct`` too: SAEs that skip HTTP see the same
    LKMs, so every recorded row and event must be the same bytes."""
    scenario = parse_scenario(load(path))
    assert scenario.transport == "http"
    first = await run(scenario, tmp_path / "one")
    second = await run(scenario, tmp_path / "two")
    direct = await run(parse_scenario({**load(path), "transport": "direct"}), tmp_path / "direct")
    failed = [f"{r.name}: {r.figure}" for r in first.results if not r.passed]
    assert first.exit_code == 0, failed
    assert [e["kind"] for e in events(tmp_path / "one")].count("outage") >= 1
    for name in ("metrics.csv", "events.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()
    assert second.summary["audit"] == first.summary["audit"] == direct.summary["audit"]
    assert second.summary["links"] == first.summary["links"] == direct.summary["links"]
    assert_links_balance(first.summary["links"])


def assert_links_balance(links: list[dict]) -> None:
    """Per-link conservation: initial + generated = relayed + overhead + discarded + final."""
    for link in links:
        made = link["initial_bits"] + link["generated_bits"]
        used = (link["relayed_bits"] + link["overhead_bits"] + link["discarded_bits"]
                + link["final_bits"])
        assert made == used, link["link"]
        assert link["generated_bits"] > 0 and link["relayed_bits"] >= 0


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
async def test_the_broken_twin_of_a_golden_scenario_fails(path: Path, tmp_path) -> None:
    data = load(path)
    data["expect"] = [TWINS[path.stem]]
    outcome = await run(parse_scenario(data), tmp_path / "twin")
    assert outcome.exit_code == 1
    assert [r.passed for r in outcome.results] == [False]


async def test_keys_delivered_before_an_lkm_crash_are_read_once_after_the_restart(tmp_path) -> None:
    outcome = await run(parse_scenario(load(ROOT / "scenarios/outages/lkm_crash.yaml")),
                        tmp_path / "crash")
    audit = outcome.summary["audit"]
    assert audit["reused_key_ids"] == 0 and audit["mismatched_keys"] == 0
    assert audit["mails_received"] == audit["mails_sent"] > 300
    recorded = events(tmp_path / "crash")
    crash_s, restart_s = 10 * 3600, 12 * 3600
    during = [e for e in recorded if e["kind"] == "delivery" and e["node"] == "LKM_A"
              and e["data"]["slave"] == "SAE_BOB_001" and crash_s < e["t_s"] < restart_s]
    assert during, "Alice kept sending to Bob from her LKM's slice while Bob's LKM was down"
    bob_reads = [e for e in recorded if e["kind"] == "consumed" and e["node"] == "LKM_B"
                 and e["data"]["slave"] == "SAE_BOB_001"]
    assert min(e["t_s"] for e in bob_reads if e["t_s"] > crash_s) >= restart_s
    failures = [e for e in recorded if e["kind"] == "failure"]
    down = {"SAE_ALICE_001": (1.25 * 86400, 1.25 * 86400 + 3600), "SAE_BOB_001": (crash_s, restart_s)}
    assert failures and all(down[e["node"]][0] <= e["t_s"] < down[e["node"]][1] for e in failures)


async def test_an_lkm_that_crashes_when_its_scheduled_sync_is_due_is_told_nothing_more(
        tmp_path) -> None:
    """The 24 h sync queues an order and the worker's start at the very time the LKM crashes:
    the crash cancels the start, so nothing is told to the stopped actor (a dead letter would
    fail the run), and the restarted LKM goes on."""
    data = {
        "name": "crash_at_sync", "seed": 3, "duration": "2d", "transport": "direct",
        "defaults": {"pool_size": 100, "sync": {"interval": "24h"}},
        "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}],
        "saes": [{"id": "SAE_ALICE_001", "email": "a@example.com", "lkm": "LKM_A"},
                 {"id": "SAE_BOB_001", "email": "b@example.com", "lkm": "LKM_A"}],
        "traffic": [{"from": "SAE_ALICE_001", "to": "SAE_BOB_001", "mails_per_hour": 4,
                     "mail_bytes": 3000}],
        "outages": [{"at": "1d", "target": "LKM_A", "kind": "crash", "for": "1h"}],
        "expect": ["no_key_reuse", "all_received_keys_match"]}
    outcome = await run(parse_scenario(data), tmp_path / "out")
    assert outcome.actor_failures == () and outcome.exit_code == 0
    recorded = events(tmp_path / "out")
    assert [e for e in recorded if e["kind"] == "delivery" and e["t_s"] > 25 * 3600]
    audit = outcome.summary["audit"]
    assert audit["mails_received"] == audit["mails_sent"] > 100
