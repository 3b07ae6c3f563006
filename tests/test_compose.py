"""Outages compose: an element combines every outage active on it, and ending one never lifts
another. Each pair of kinds that can overlap on one element runs with outage A over [1 h, 11 h]
and outage B over [2 h, 4 h]; between 4 h and 11 h A must still hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.keynode.messages import ListPools
from nodes.network.km import Ping
from nodes.network.link import Available, GetAccount, GetLatency
from nodes.network.routing import edge_key
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from tests.test_network import A, B, network, topology

H = 3600.0
LINK = {"model": "fixed", "rate_bps": 100_000, "initial_bits": 10_000_000}
PAIR = [{"a": "KM1", "b": "KM2", **LINK}]
QLINK = [{"a": "KM1", "b": "KM2", "model": "decoy_bb84", "length_km": 20,
          "initial_bits": 10_000_000}]
DOWN_LINK = {"kind": "down", "target": "KM1-KM2"}
CUT = {"kind": "partition", "groups": [["KM1"], ["KM2"]]}
KM_DOWN = {"kind": "down", "target": "KM2"}


def outages(first: dict, second: dict) -> list[dict]:
    return [{"at": "1h", "for": "10h", **first}, {"at": "2h", "for": "2h", **second}]


async def link_is_up(net) -> bool:
    return await net.links[edge_key("KM1", "KM2")].ask(Available()) is not None


async def km2_is_up(net) -> bool:
    try:
        await net.kms["KM2"].ask(Ping())
    except Exception:  # noqa: BLE001 - KMUnreachable: down
        return False
    return True


async def made_in_an_hour(net) -> int:
    ref = net.links[edge_key("KM1", "KM2")]
    before = (await ref.ask(GetAccount()))["generated_bits"]
    await net.sim.run(net.sim.clock.now() + H)
    return (await ref.ask(GetAccount()))["generated_bits"] - before


DOWN_PAIRS = {  # (A, B): both hold the link down
    "link down + partition": (DOWN_LINK, CUT),
    "partition + link down": (CUT, DOWN_LINK),
    "link down + link down": (DOWN_LINK, DOWN_LINK),
    "partition + partition": (CUT, CUT),
    "link down + its KM down": (DOWN_LINK, KM_DOWN),
    "KM down + link down": (KM_DOWN, DOWN_LINK),
    "KM down + partition": (KM_DOWN, CUT),
}


@pytest.mark.parametrize("pair", DOWN_PAIRS, ids=str)
async def test_a_link_stays_down_until_every_outage_holding_it_ends(pair, tmp_path: Path) -> None:
    first, second = DOWN_PAIRS[pair]
    data = topology(PAIR, kms=2, traffic=[], outages=outages(first, second))
    async with network(tmp_path, data) as net:
        seen = {}
        for hours in (0.5, 1.5, 3, 5, 10.5, 11.5):
            await net.sim.run(hours * H)
            seen[hours] = await link_is_up(net)
        assert seen == {0.5: True, 1.5: False, 3: False, 5: False, 10.5: False, 11.5: True}


async def test_a_km_stays_down_until_both_its_outages_end(tmp_path: Path) -> None:
    data = topology(PAIR, kms=2, traffic=[], outages=outages(KM_DOWN, KM_DOWN))
    async with network(tmp_path, data) as net:
        seen = []
        for hours in (0.5, 3, 5, 11.5):
            await net.sim.run(hours * H)
            seen.append(await km2_is_up(net))
        assert seen == [True, False, False, True]


async def test_overlapping_degrades_multiply_and_end_one_by_one(tmp_path: Path) -> None:
    data = topology(PAIR, kms=2, traffic=[], outages=outages(
        {"kind": "degrade", "target": "KM1-KM2", "fraction": 0.5},
        {"kind": "degrade", "target": "KM1-KM2", "fraction": 0.2}))
    async with network(tmp_path, data) as net:
        await net.sim.run(2 * H)
        both = await made_in_an_hour(net)  # 2 h - 3 h: 0.5 * 0.2
        await net.sim.run(5 * H)
        one = await made_in_an_hour(net)  # 5 h - 6 h: 0.5
        await net.sim.run(12 * H)
        none = await made_in_an_hour(net)
    assert none == pytest.approx(100_000 * H, rel=0.01)
    assert one == pytest.approx(0.5 * none, rel=0.01)
    assert both == pytest.approx(0.1 * none, rel=0.01)


async def test_qber_rises_compose_with_each_other_and_with_degrade(tmp_path: Path) -> None:
    data = topology(QLINK, kms=2, traffic=[], outages=[
        {"at": "1h", "for": "10h", "kind": "qber_rise", "target": "KM1-KM2", "qber": 0.05},
        {"at": "2h", "for": "2h", "kind": "qber_rise", "target": "KM1-KM2", "qber": 0.2},
        {"at": "6h", "for": "2h", "kind": "degrade", "target": "KM1-KM2", "fraction": 0.5}])
    async with network(tmp_path, data) as net:
        await net.sim.run(1 * H)
        raised = await made_in_an_hour(net)  # 1-2 h: QBER 5 %
        aborted = await made_in_an_hour(net)  # 2-3 h: 20 % holds over 5 %: ABORT
        await net.sim.run(4 * H)
        back = await made_in_an_hour(net)  # 4-5 h: the 5 % rise still holds
        await net.sim.run(6 * H)
        halved = await made_in_an_hour(net)  # 6-7 h: 5 % and degrade 0.5
    assert aborted == 0
    assert back == pytest.approx(raised, rel=0.02) and raised > 0
    assert halved == pytest.approx(0.5 * raised, rel=0.05)


async def test_latencies_on_a_link_and_its_km_add_up_and_end_one_by_one(tmp_path: Path) -> None:
    data = topology(PAIR, kms=2, traffic=[], outages=outages(
        {"kind": "latency", "target": "KM1-KM2", "delay": "30s"},
        {"kind": "latency", "target": "KM2", "delay": "5m"}))
    async with network(tmp_path, data) as net:
        delays = []
        for hours in (1.5, 3, 5, 11.5):
            await net.sim.run(hours * H)
            delays.append(await net.links[edge_key("KM1", "KM2")].ask(GetLatency()))
    assert delays == [30.0, 330.0, 30.0, 0.0]


async def test_an_lkm_crashed_twice_restarts_when_the_last_crash_ends(tmp_path: Path) -> None:
    crash = {"kind": "crash", "target": "LKM_B"}
    data = topology(PAIR, kms=2, traffic=[], outages=outages(crash, crash))
    async with network(tmp_path, data) as net:
        alive = []
        for hours in (0.5, 3, 5, 11.5):
            await net.sim.run(hours * H)
            await net.sim.settle()
            alive.append("LKM_B" in net.lkm_refs)
        assert (await net.lkm_refs["LKM_B"].ask(ListPools()))["pools"]
    assert alive == [True, False, False, True]


async def test_no_relay_crosses_a_link_while_any_outage_holds_it_down(tmp_path: Path) -> None:
    """The case that was reported: link KM1-KM2 down from 1 h to 11 h, a partition of KM1 and
    KM2 from 2 h to 4 h; relays crossed the "down" link after the partition ended."""
    data = topology(PAIR, kms=2, duration="16h", defaults={"pool_size": 100, "slice_size": 20},
                    traffic=[{"from": A, "to": B, "mails_per_hour": 20, "mail_bytes": 1000}],
                    outages=outages(DOWN_LINK, CUT))
    await run(parse_scenario(data), tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    relays = [row["t_s"] for row in rows if row["kind"] == "relay"]
    assert [t for t in relays if H <= t < 11 * H] == []
    assert [t for t in relays if t >= 11 * H]  # and the slice refills once both have ended
