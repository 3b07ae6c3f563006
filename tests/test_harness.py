"""Scenario runs end to end: determinism, virtual time, the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from nodes.run.harness import run
from nodes.run.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
DAY_S = 86400.0
OUTAGE_S = 3 * 3600.0  # two_users' KM outage


def two_users(**changes: object) -> dict:
    """Alice and Bob on one LKM, light mail both ways, a 3-hour KM outage on day 1 (which the
    pools ride out whatever the draws, or nearly: 23 of seeds 1-24 send every mail)."""
    data = {
        "name": "two-users", "seed": 3, "duration": "2d",
        "defaults": {"pool_size": 200, "sync": {"interval": "24h", "threshold": 0.1,
                                                "emergency": 0.05}},
        "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}],
        "saes": [{"id": "SAE_ALICE_001", "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": "SAE_BOB_001", "email": "bob@example.com", "lkm": "LKM_A"}],
        "traffic": [{"from": "SAE_ALICE_001", "to": "SAE_BOB_001", "mails_per_hour": 4,
                     "mail_bytes": 3000},
                    {"from": "SAE_BOB_001", "to": "SAE_ALICE_001", "mails_per_hour": 4,
                     "mail_bytes": 3000}],
        "outages": [{"at": "1d", "target": "KM1", "kind": "down", "for": "3h"}],
        "expect": ["no_key_reuse", "all_received_keys_match", {"max_failed_sends": 0}],
    }
    data.update(changes)
    return data


async def test_the_same_scenario_and_seed_give_byte_identical_outputs(tmp_path: Path) -> None:
    scenario = parse_scenario(two_users())
    first = await run(scenario, tmp_path / "one")
    second = await run(scenario, tmp_path / "two")
    for name in ("metrics.csv", "events.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert first.summary["audit"]["mails_sent"] > 100
    assert second.summary["totals"] == first.summary["totals"]
    other = await run(parse_scenario(two_users(seed=4)), tmp_path / "three")
    assert (tmp_path / "three" / "events.jsonl").read_bytes() != \
        (tmp_path / "one" / "events.jsonl").read_bytes()
    assert other.exit_code == first.exit_code == 0


async def test_a_week_of_virtual_time_runs_with_syncs_at_the_scheduled_times(tmp_path: Path) -> None:
    scenario = parse_scenario(two_users(duration="7d", outages=[]))
    outcome = await run(scenario, tmp_path / "week")
    events = [json.loads(line) for line in (tmp_path / "week/events.jsonl").read_text().splitlines()]
    scheduled = sorted({e["t_s"] for e in events
                        if e["kind"] == "sync" and e["data"]["reason"] == "scheduled"})
    assert scheduled == [DAY_S * day for day in range(1, 8)]
    deliveries = [e for e in events if e["kind"] == "delivery"]
    assert len(deliveries) == outcome.summary["audit"]["mails_sent"] > 900
    assert outcome.summary["audit"]["mails_received"] == outcome.summary["audit"]["mails_sent"]
    assert outcome.summary["simulated_s"] == 7 * DAY_S


async def test_an_outage_is_served_from_the_cache_and_its_failed_syncs_recorded(tmp_path) -> None:
    heavy = two_users(defaults={"pool_size": 100, "sync": {"interval": "24h"}})
    heavy["traffic"][0]["mails_per_hour"] = 12  # 36 keys/h: Bob's pool falls below 10 % in 3 h
    outcome = await run(parse_scenario(heavy), tmp_path / "outage")
    events = [json.loads(line) for line in (tmp_path / "outage/events.jsonl").read_text().splitlines()]
    during = [e for e in events if e["kind"] == "sync" and DAY_S < e["t_s"] < DAY_S + OUTAGE_S]
    assert during and all(e["data"]["outcome"] == "unreachable" for e in during)
    after = [e for e in events if e["kind"] == "sync" and e["t_s"] >= DAY_S + OUTAGE_S
             and e["data"]["outcome"] == "ok"]
    assert after, "the LKM syncs again once the KM is back"
    assert [e["data"]["phase"] for e in events if e["kind"] == "outage"] == ["start", "end"]
    assert outcome.summary["audit"]["reused_key_ids"] == 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run_scenario.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_invalid_scenarios_exit_2_naming_the_field(tmp_path: Path) -> None:
    cases = {
        "lkms.0.km: unknown KM 'KM9'": two_users(lkms=[{"id": "LKM_A", "km": "KM9"}]),
        "traffic.0.mails_per_hour": two_users(traffic=[{
            "from": "SAE_ALICE_001", "to": "SAE_BOB_001", "mails_per_hour": -1,
            "mail_bytes": 10}]),
        "duration": two_users(duration="3x"),
        "colour": {**two_users(), "colour": "blue"},
    }
    for needle, data in cases.items():
        result = cli(str(write(tmp_path, data)), "--out", str(tmp_path / "out"))
        assert result.returncode == 2, (needle, result.stdout, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr


def test_a_failed_expectation_exits_1_with_the_figure_that_broke_it(tmp_path: Path) -> None:
    data = two_users(duration="12h", outages=[],
                     expect=[{"min_syncs": {"reason": "emergency", "count": 5}}])
    result = cli(str(write(tmp_path, data)), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    assert "FAIL" in result.stdout and "0" in result.stdout.split("FAIL", 1)[1]
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["expectations"][0]["passed"] is False
    assert (tmp_path / "out/plots/pool_levels.png").stat().st_size > 10_000


def test_validate_accepts_the_shipped_scenarios() -> None:
    result = cli("validate", *map(str, sorted((ROOT / "scenarios").glob("*.yaml"))))
    assert result.returncode == 0, result.stderr


async def test_a_run_that_hangs_ends_with_the_hang_named_and_its_records_written(tmp_path) -> None:
    """Two actors ask each other and wait forever: the run is not left hanging; it ends, names
    the work in flight, writes what it recorded, and fails."""
    from nodes.run.harness import _execute
    from simulator import Actor

    class Partner(Actor):
        other = None

        async def receive(self, message: object) -> object:
            return await self.other.ask(message)

    async def deadlock_at_noon(sim) -> None:
        a, b = Partner("a"), Partner("b")
        a.other, b.other = await sim.spawn(b), await sim.spawn(a)
        sim.clock.call_later(12 * 3600 - sim.clock.now(), lambda: a.ref.tell("hello"))
        await sim.run(DAY_S)

    scenario = parse_scenario(two_users(duration="1d", outages=[]))
    outcome = await _execute(scenario, tmp_path / "hung", "virtual", deadlock_at_noon,
                             stall_s=0.2)
    assert outcome.exit_code == 1
    [failure] = outcome.actor_failures
    assert failure.startswith("engine: Stalled:") and "a <- str" in failure
    assert "t=43200 s" in failure
    assert outcome.summary["audit"] == {} and outcome.summary["simulated_s"] == 43200.0
    events = (tmp_path / "hung" / "events.jsonl").read_text().splitlines()
    assert any('"delivery"' in line for line in events)  # the morning's mail is on record


def test_outputs_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Iteration order never comes from hashing: two processes with different PYTHONHASHSEED
    write the same bytes for a scenario with relays, reroutes and a partition."""
    import os

    scenario = ROOT / "scenarios" / "outages" / "partition_heal.yaml"
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"hash{seed}"
        result = subprocess.run([sys.executable, "run_scenario.py", str(scenario), "--out",
                                 str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        outputs.append([(out / name).read_bytes() for name in ("metrics.csv", "events.jsonl")])
    assert outputs[0] == outputs[1]


async def test_a_run_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    # the set-up pauses the collector and freezes what it built; a run (even a failing one)
    # must hand both back, or a sweep's worker would keep every run's objects frozen
    import gc

    assert gc.isenabled() and gc.get_freeze_count() == 0
    outcome = await run(parse_scenario(two_users(duration="1d", outages=[])), tmp_path / "a")
    assert outcome.exit_code == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()  # a caller that turned it off keeps it off
    try:
        await run(parse_scenario(two_users(duration="1d", outages=[])), tmp_path / "b")
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


async def test_mail_takes_mail_delay_to_reach_its_receiver(tmp_path: Path) -> None:
    """Alice's keys are handed to her (``delivery``) when she sends, Bob's (``consumed``) when
    he reads: 90 s later with ``mail_delay: 90s``, at once without. Mails still in flight at the
    end are sent, not yet read."""
    one_way = [{"from": "SAE_ALICE_001", "to": "SAE_BOB_001", "mails_per_hour": 6,
                "mail_bytes": 1000}]
    times = {}
    for delay in ("0s", "90s"):
        data = two_users(duration="6h", outages=[], traffic=one_way, mail_delay=delay,
                         transport="direct")
        outcome = await run(parse_scenario(data), tmp_path / delay)
        rows = [json.loads(line)
                for line in (tmp_path / delay / "events.jsonl").read_text().splitlines()]
        sent = [row["t_s"] for row in rows if row["kind"] == "delivery"]
        read = [row["t_s"] for row in rows if row["kind"] == "consumed"]
        times[delay] = sent, read, outcome.summary["audit"]
    sent, read, audit = times["0s"]
    assert len(sent) > 20 and read == sent and audit["mails_received"] == len(sent)
    sent, read, audit = times["90s"]
    assert sent == times["0s"][0]  # the same mails, sent at the same times
    in_flight = [t for t in sent if t + 90 > 6 * 3600]
    assert read == [t + 90 for t in sent if t + 90 <= 6 * 3600]
    assert audit["mails_received"] == len(sent) - len(in_flight)
