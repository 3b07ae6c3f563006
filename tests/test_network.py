"""The KM network: relay accounting, rerouting, slices and cross-site mail over real HTTP."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from nodes.keynode.errors import KMUnreachable
from nodes.keynode.messages import ListPools, Sync
from nodes.keynode.store import audit as store_audit
from nodes.network.link import Level, SetUp
from nodes.network.routing import edge_key
from nodes.run.builder import Network
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from simulator.runtime import Simulation

API = "/api/v1/keys"
A, B, C = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001"
KEY_BITS = 8192


def topology(links: list[dict], kms: int = 3, traffic: list | None = None, **extra) -> dict:
    """Alice on LKM_A (KM1), Bob and Carol on LKM_B (the last KM)."""
    data = {
        "name": "net", "seed": 1, "duration": "1d",
        "hop_processing": 0,  # relays here are instant unless a test adds latency
        "defaults": {"pool_size": 100, "slice_size": 40},
        "kms": [{"id": f"KM{i}"} for i in range(1, kms + 1)], "links": links,
        "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": f"KM{kms}"}],
        "saes": [{"id": A, "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": B, "email": "bob@example.com", "lkm": "LKM_B"},
                 {"id": C, "email": "carol@example.com", "lkm": "LKM_B"}],
        "traffic": traffic if traffic is not None else [
            {"from": A, "to": B, "mails_per_hour": 1, "mail_bytes": 1000}],
    }
    data.update(extra)
    return data


FULL = {"model": "fixed", "rate_bps": 1000, "initial_bits": 10_000_000}  # buffers start full
LINE = [{"a": "KM1", "b": "KM2", **FULL}, {"a": "KM2", "b": "KM3", **FULL}]
SQUARE = [{"a": "KM1", "b": "KM2", **FULL}, {"a": "KM2", "b": "KM4", **FULL},
          {"a": "KM1", "b": "KM3", **FULL}, {"a": "KM3", "b": "KM4", **FULL}]
AUTH = 128  # authentication per relay message and hop (the link default)


@asynccontextmanager
async def network(tmp_path: Path, data: dict) -> AsyncIterator[Network]:
    scenario = parse_scenario(data)
    sim = Simulation(scenario.seed)
    net = Network(scenario, sim, tmp_path)
    try:
        await net.start()
        await sim.activity.wait_idle()
        yield net
    finally:
        await net.close()
        await sim.shutdown()


async def relay(net: Network, src: str, dst: str, count: int) -> tuple:
    """Relay ``count`` keys as the LKMs' workers do: in a task of the simulation, the clock
    settling meanwhile (the relay's hops are messages between KM actors)."""
    task = net.sim.start_task(net.km_network.relay(src, dst, KEY_BITS, count))
    await net.sim.settle()
    return task.result()


async def levels(net: Network) -> dict[tuple[str, str], float]:
    return {edge: await ref.ask(Level()) for edge, ref in net.links.items()}


async def pools(net: Network, lkm: str) -> dict[str, int]:
    reply = await net.lkm_refs[lkm].ask(ListPools())
    return {p["sae_id"]: p["available_keys"] for p in reply["pools"]}


async def call(net: Network, lkm: str, sae: str, method: str, path: str, **kw) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, net.nodes[lkm].url + path,
                                   headers={"X-SAE-ID": sae}, **kw) as response:
            return response.status, json.loads(await response.text())


async def test_a_relay_spends_the_relayed_bits_on_every_hop(tmp_path: Path) -> None:
    async with network(tmp_path, topology(LINE)) as net:
        before = await levels(net)
        path = await relay(net, "KM3", "KM1", 5)
        after = await levels(net)
    assert path == (["KM3", "KM2", "KM1"], 5, "ok")
    assert {edge: before[edge] - after[edge] for edge in before} == {
        ("KM1", "KM2"): 5 * KEY_BITS + AUTH, ("KM2", "KM3"): 5 * KEY_BITS + AUTH}


async def test_opening_a_slice_ships_keys_over_the_relay_and_accounts_every_hop(tmp_path) -> None:
    buffer_bits = 10_000_000
    async with network(tmp_path, topology(LINE)) as net:
        spent = {edge: buffer_bits - level for edge, level in (await levels(net)).items()}
        assert (await pools(net, "LKM_A"))[B] == 40  # the slice was filled before the run
        assert (await pools(net, "LKM_B"))[B] == 60  # shipped out of Bob's home pool
    assert spent == {("KM1", "KM2"): 40 * KEY_BITS + AUTH, ("KM2", "KM3"): 40 * KEY_BITS + AUTH}


async def test_the_sampled_levels_are_the_pools_view_home_and_slice(tmp_path: Path) -> None:
    # a run samples ListPools(levels_only=True): the same pools, order and counts as the view
    kinds = set()
    async with network(tmp_path, topology(LINE)) as net:
        for lkm in ("LKM_A", "LKM_B"):
            view = await net.lkm_refs[lkm].ask(ListPools())
            levels = await net.lkm_refs[lkm].ask(ListPools(levels_only=True))
            assert levels == [(p["sae_id"], p["available_keys"]) for p in view["pools"]]
            assert len(levels) >= 2
            kinds |= {p["kind"] for p in view["pools"]}
    assert kinds == {"home", "slice"}


async def test_a_link_down_reroutes_over_another_path(tmp_path: Path) -> None:
    async with network(tmp_path, topology(SQUARE, kms=4)) as net:
        first = await relay(net, "KM1", "KM4", 1)
        net.links[edge_key("KM1", "KM2")].tell(SetUp(False))
        second = await relay(net, "KM1", "KM4", 1)
    assert first == (["KM1", "KM2", "KM4"], 1, "ok") and second == (["KM1", "KM3", "KM4"], 1, "ok")


async def test_no_path_fails_cleanly_with_nothing_spent_or_shipped(tmp_path: Path) -> None:
    async with network(tmp_path, topology(SQUARE, kms=4)) as net:
        net.links[edge_key("KM2", "KM4")].tell(SetUp(False))
        net.links[edge_key("KM3", "KM4")].tell(SetUp(False))
        before_links, before_home = await levels(net), await pools(net, "LKM_B")
        assert await relay(net, "KM1", "KM4", 1) == (None, 0, "no_path")
        task = net.sim.start_task(net.km_network.fetch_slice("LKM_A", B, "LKM_B", 10))
        await net.sim.settle()
        with pytest.raises(KMUnreachable):
            task.result()
        assert await levels(net) == before_links
        assert await pools(net, "LKM_B") == before_home


async def test_cross_site_keys_match_and_are_consumed_once_on_each_side(tmp_path: Path) -> None:
    async with network(tmp_path, topology(LINE)) as net:
        status, body = await call(net, "LKM_A", A, "POST", f"{API}/{B}/enc_keys", json={"number": 3})
        assert status == 200
        ids = [{"key_ID": k["key_ID"]} for k in body["keys"]]
        sent = [base64.b64decode(k["key"]) for k in body["keys"]]
        status, read = await call(net, "LKM_B", B, "POST", f"{API}/{A}/dec_keys",
                                  json={"key_IDs": ids})
        assert status == 200 and [base64.b64decode(k["key"]) for k in read["keys"]] == sent
        status, again = await call(net, "LKM_B", B, "POST", f"{API}/{A}/dec_keys",
                                   json={"key_IDs": ids})
        assert status == 400 and "not found" in again["message"]
        status, _ = await call(net, "LKM_B", C, "POST", f"{API}/{A}/dec_keys", json={"key_IDs": ids})
        assert status == 401
        status, _ = await call(net, "LKM_A", A, "POST", f"{API}/{A}/dec_keys", json={"key_IDs": ids})
        assert status == 401  # Alice is not a slave of Bob's keys, anywhere
        assert (await pools(net, "LKM_A"))[B] == 37
        audit = await net.audit_counts()
        assert audit["reused_key_ids"] == 0


async def test_an_empty_slice_with_no_route_is_503_and_loses_nothing(tmp_path: Path) -> None:
    data = topology(LINE, defaults={"pool_size": 100, "slice_size": 10,
                                    "sync": {"threshold": 0.1, "emergency": 0.05}})
    async with network(tmp_path, data) as net:
        net.links[edge_key("KM2", "KM3")].tell(SetUp(False))
        home_before = (await pools(net, "LKM_B"))[B]
        for _ in range(10):
            status, _ = await call(net, "LKM_A", A, "POST", f"{API}/{B}/enc_keys", json={"number": 1})
            assert status == 200
        await net.sim.settle()  # the emergency sync runs in its own clock step
        status, body = await call(net, "LKM_A", A, "POST", f"{API}/{B}/enc_keys", json={"number": 1})
        assert status == 503 and body["message"]
        await net.sim.settle()
        assert (await pools(net, "LKM_B"))[B] == home_before  # shipped keys came back
        syncs = net.sim.recorder.events_of("sync")
        assert [e.get("outcome") for e in syncs if e.get("pool") == f"LKM_A/{B}"][-1] == \
            "unreachable"


async def test_a_draining_slice_syncs_at_threshold_then_emergency(tmp_path: Path) -> None:
    data = topology(LINE, duration="2d", defaults={"pool_size": 400, "slice_size": 100},
                    traffic=[{"from": A, "to": B, "mails_per_hour": 10, "mail_bytes": 1000}],
                    outages=[{"at": "1h", "target": "KM2-KM3", "kind": "down"}])
    await run(parse_scenario(data), tmp_path / "out")
    events = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    slice_syncs = [e["data"] for e in events
                   if e["kind"] == "sync" and e["data"]["pool"] == f"LKM_A/{B}"
                   and e["data"]["reason"] in ("threshold", "emergency")]
    reasons = [s["reason"] for s in slice_syncs]
    assert reasons[0] == "threshold" and "emergency" in reasons
    first_emergency = reasons.index("emergency")
    assert all(r == "threshold" for r in reasons[:first_emergency])
    for sync in slice_syncs:
        level = 100 - sync["keys_requested"]  # what the slice held when the sync started
        assert level < (10 if sync["reason"] == "threshold" else 5)
        assert level >= (5 if sync["reason"] == "threshold" else 0)
        assert sync["outcome"] == "unreachable"


async def test_added_latency_on_a_relay_km_delays_slice_syncs_in_virtual_time(tmp_path) -> None:
    data = topology(LINE, duration="12h", defaults={"pool_size": 200, "slice_size": 20},
                    traffic=[{"from": A, "to": B, "mails_per_hour": 6, "mail_bytes": 1000}],
                    outages=[{"at": "1h", "target": "KM2", "kind": "latency", "delay": "5m",
                              "for": "6h"}])
    outcome = await run(parse_scenario(data), tmp_path / "out")
    events = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    syncs = [e for e in events if e["kind"] == "sync" and e["data"]["pool"] == f"LKM_A/{B}"
             and e["data"]["outcome"] == "ok" and e["data"]["keys_received"] > 0]
    slow = [e for e in syncs if 3600 <= e["t_s"] < 7 * 3600]
    fast = [e for e in syncs if e["t_s"] >= 7 * 3600 + 600]
    assert slow and fast
    # the ask and the keys each cross two hops through KM2, 5 min each
    assert all(e["data"]["duration_s"] == 1200.0 for e in slow)
    assert all(e["data"]["duration_s"] == 0.0 for e in fast)
    assert outcome.summary["audit"]["mismatched_keys"] == 0


async def test_keys_on_their_way_to_a_crashed_lkm_go_home_and_the_key_spent_stays_spent(
        tmp_path) -> None:
    """Each hop takes 10 min: the ask reaches KM3 at 20 min, Bob's keys leave, and LKM_A crashes
    at 25 min. The keys still cross both hops (each spends its bits at its master end, KM2 and
    KM1, as they arrive), find no one waiting at KM1 at 40 min and go home: Bob's pool has them
    back at 60 min. The link key they used stays spent."""
    slow = [{**link, "rate_bps": 1e-6, "buffer_bits": 10**9} for link in LINE]
    async with network(tmp_path, topology(slow)) as net:
        for edge in net.links:
            net.set_latency(edge, 600.0)
        await net.sim.settle()
        status, _ = await call(net, "LKM_A", A, "POST", f"{API}/{B}/enc_keys", json={"number": 3})
        assert status == 200
        await net.sim.settle()
        home_store = net.nodes["LKM_B"].lkm.store
        shipped = await home_store.read(store_audit.shipped_to)
        before_links, before_home = await levels(net), await pools(net, "LKM_B")
        assert await net.lkm_refs["LKM_A"].ask(Sync("manual", (B,)))
        await net.sim.run(net.sim.clock.now() + 1500)  # shipped, on the way to KM2
        assert (await pools(net, "LKM_B"))[B] == before_home[B] - 3
        assert await levels(net) == before_links  # nothing spent before KM2 sees them
        net.crash("LKM_A")
        await net.sim.run(net.sim.clock.now() + 1500)  # at KM1 at 40 min, home at 60
        spent = {edge: before_links[edge] - level for edge, level in (await levels(net)).items()}
        assert spent == {edge: pytest.approx(3 * KEY_BITS + AUTH, abs=1) for edge in net.links}
        assert (await pools(net, "LKM_B"))[B] == before_home[B] - 3
        await net.sim.run(net.sim.clock.now() + 3600)
        assert await pools(net, "LKM_B") == before_home
        assert await levels(net) == {edge: pytest.approx(before_links[edge] - spent[edge], abs=1)
                                     for edge in net.links}
        assert await home_store.read(store_audit.shipped_to) == shipped
        assert net.sim.system.failures == []
        assert [e.kind for e in net.sim.recorder.events_of("sync")
                if e.get("pool") == f"LKM_A/{B}" and e.t_s > 0] == []
