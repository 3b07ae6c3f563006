"""Recovery without traffic: failed syncs retry on a backoff timer, and the scheduled-sync
phase is absolute, so it survives an LKM restart."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nodes.keynode.config import SyncPolicy
from nodes.keynode.sync import PoolLevel, SyncScheduler
from nodes.network.link import SetUp
from nodes.network.routing import edge_key
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from tests.test_network import API, A, B, call, network, pools, topology

ROOT = Path(__file__).resolve().parent.parent
H = 3600.0


def test_a_failing_pool_backs_off_from_five_minutes_doubling_to_an_hour() -> None:
    plan = SyncScheduler(SyncPolicy(86400.0, 0.1, 0.05))
    pool = PoolLevel(B, 0, 100, 8192, "LKM_B")
    waits = []
    for outcome in ("unreachable", "no_key", "error", "unreachable", "no_key", "unreachable"):
        order = plan.request("retry", pool)
        assert order is not None and plan.take() == order
        plan.finished(order, outcome, 0.0)
        waits.append(plan.backoff_s(B))
    assert waits == [300, 600, 1200, 2400, 3600, 3600]
    order = plan.request("retry", pool)
    assert order is not None and plan.take() == order
    plan.finished(order, "ok", 0.0)
    assert plan.backoff_s(B) is None


async def test_a_drained_slice_refills_after_its_link_returns_with_no_traffic(tmp_path) -> None:
    """Alice drains her slice of Bob's pool while the only link is down, then nobody sends.
    The failed top-up retries on its own, and the slice is full again within the longest
    backoff (1 h, +20 % jitter) of the link coming back."""
    data = topology([{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 100_000,
                      "initial_bits": 10_000_000}], kms=2,
                    traffic=[{"from": A, "to": B, "mails_per_hour": 0.0001, "mail_bytes": 1000}],
                    defaults={"pool_size": 100, "slice_size": 40})  # a flow (for the slice)
    # whose first mail is due thousands of hours away: no traffic in the test's hours
    async with network(tmp_path, data) as net:
        link = net.links[edge_key("KM1", "KM2")]
        link.tell(SetUp(False, "cut"))
        for _ in range(38):
            status, _ = await call(net, "LKM_A", A, "POST", f"{API}/{B}/enc_keys",
                                   json={"number": 1})
            assert status == 200
        await net.sim.run(5 * H)  # retries fail meanwhile
        assert (await pools(net, "LKM_A"))[B] == 2
        link.tell(SetUp(True, "cut"))
        back_s = net.sim.clock.now()
        assert not net.sim.recorder.events_of("failure")  # nobody sent anything meanwhile
        await net.sim.run(back_s + 1.2 * H + 1)
        assert (await pools(net, "LKM_A"))[B] == 40
        syncs = [e for e in net.sim.recorder.events_of("sync") if e.get("pool") == f"LKM_A/{B}"]
        retries = [e for e in syncs if e.get("reason") == "retry"]
        assert [e.get("outcome") for e in retries][:-1] == ["unreachable"] * (len(retries) - 1)
        assert retries[-1].get("outcome") == "ok" and retries[-1].t_s > back_s
        gaps = [b.t_s - a.t_s for a, b in zip(syncs, syncs[1:])]
        assert max(gaps) <= 1.2 * H and gaps[-1] >= 0.8 * 300  # backoff with jitter


async def test_the_scheduled_sync_phase_survives_a_restart(tmp_path) -> None:
    """LKM_B crashes from 10 h to 12 h: its scheduled syncs still come at 24 h and 48 h (a
    restart used to push the first one to 36 h)."""
    data = yaml.safe_load((ROOT / "scenarios/outages/lkm_crash.yaml").read_text())
    data["duration"] = "2d1h"  # so that the 48 h sync is recorded (an event marks its end)
    await run(parse_scenario(data), tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    started = sorted({round(row["t_s"] - row["data"]["duration_s"], 6) for row in rows
                      if row["kind"] == "sync" and row["node"] == "LKM_B"
                      and row["data"]["reason"] == "scheduled"})
    assert sorted({int(start // H) for start in started}) == [24, 48]  # (a queued one waits)


async def test_slices_never_drain_a_home_pool_below_its_own_threshold(tmp_path) -> None:
    """Bob's home pool holds 100 keys (threshold 10); two remote LKMs each want a slice of 60.
    The first gets 60, the second only the 30 above the reserve (recorded as a partial fill
    held back by the home reserve); Bob's pool then refills itself at once, and the second
    slice is completed by its next top-up (here the scheduled one at 24 h)."""
    data = {
        "name": "reserve", "seed": 3, "duration": "1d1h", "hop_processing": 0,
        "defaults": {"pool_size": 100, "slice_size": 60},
        "kms": [{"id": "KM1"}, {"id": "KM2"}],
        "links": [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 1e5,
                   "initial_bits": 10_000_000}],
        "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM2"},
                 {"id": "LKM_C", "km": "KM1"}],
        "saes": [{"id": A, "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": B, "email": "bob@example.com", "lkm": "LKM_B"},
                 {"id": "SAE_CAROL_001", "email": "carol@example.com", "lkm": "LKM_C"}],
        "traffic": [{"from": A, "to": B, "mails_per_hour": 0.0001, "mail_bytes": 1000},
                    {"from": "SAE_CAROL_001", "to": B, "mails_per_hour": 0.0001,
                     "mail_bytes": 1000}],
    }
    async with network(tmp_path, data) as net:
        relays = [(e.get("sites"), e.get("keys"), e.get("held_by"))
                  for e in net.sim.recorder.events_of("relay")]
        assert relays[:2] == [("LKM_B>LKM_A", 60, None), ("LKM_B>LKM_C", 30, "home_reserve")]
        ships = net.sim.recorder.events_of("ship")
        assert [e.get("keys") for e in ships][:2] == [60, 30]
        assert (await pools(net, "LKM_B"))[B] == 100  # refilled at once from its KM
        await net.sim.run(23 * H)
        assert (await pools(net, "LKM_C"))[B] == 30  # a partial slice waits for a top-up
        await net.sim.run(25 * H)
        assert (await pools(net, "LKM_C"))[B] == 60
        assert (await pools(net, "LKM_A"))[B] == 60
