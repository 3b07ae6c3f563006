"""Relays in virtual time, routing policies, and trusted-node exposure."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

import networkx as nx
import pytest
import yaml

from nodes.network.routing import (
    edge_key,
    first_shortest_path,
    key_aware_path,
    shortest_path,
    widest_path,
)
from nodes.run.harness import run
from nodes.run.routing_compare import compare
from nodes.run.scenario import parse_scenario
from tests.test_network import A, B, topology

ROOT = Path(__file__).resolve().parent.parent


def square() -> nx.Graph:
    """KM1 joined to KM4 directly and through KM2 and KM3."""
    graph = nx.Graph()
    graph.add_edges_from([("KM1", "KM4"), ("KM1", "KM2"), ("KM2", "KM4"), ("KM1", "KM3"),
                          ("KM3", "KM4")])
    return graph


AVAILABLE = {("KM1", "KM4"): 50_000, ("KM1", "KM2"): 900_000, ("KM2", "KM4"): 400_000,
             ("KM1", "KM3"): 800_000, ("KM3", "KM4"): 700_000}


def test_widest_takes_the_path_with_the_largest_smallest_buffer() -> None:
    assert widest_path(square(), "KM1", "KM4", AVAILABLE, 8192) == ["KM1", "KM3", "KM4"]
    # a link that cannot hold one key is never used, however short
    assert widest_path(square(), "KM1", "KM4", {**AVAILABLE, ("KM1", "KM2"): 0,
                                                ("KM1", "KM3"): 0}, 8192) == ["KM1", "KM4"]


def test_key_aware_pays_for_a_hop_as_its_key_falls_relative_to_demand() -> None:
    # a small demand: the direct hop costs 1 + 8192/50000 < any two-hop path
    assert key_aware_path(square(), "KM1", "KM4", AVAILABLE, 8192, 8192) == ["KM1", "KM4"]
    # 80,000 bits: the direct hop costs 1 + 80000/50000 = 2.6, the detour through KM3
    # 2 + 80000/800000 + 80000/700000 = 2.21, the one through KM2 2 + 0.09 + 0.2 = 2.29
    assert key_aware_path(square(), "KM1", "KM4", AVAILABLE, 8192, 80_000) == \
        ["KM1", "KM3", "KM4"]


async def test_a_slice_arrives_after_its_paths_latency(tmp_path: Path) -> None:
    """Two 100 km hops and 10 ms of processing per hop: the keys take
    2 x (100 km x 5 us/km + 10 ms) = 21 ms from the home pool to the slice, after the ask took
    as long to reach the home KM, so each sync ends 42 ms after it started."""
    line = [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 1e5, "length_km": 100,
             "initial_bits": 10_000_000},
            {"a": "KM2", "b": "KM3", "model": "fixed", "rate_bps": 1e5, "length_km": 100,
             "initial_bits": 10_000_000}]
    data = topology(line, duration="6h", hop_processing="10ms",
                    traffic=[{"from": A, "to": B, "mails_per_hour": 30, "mail_bytes": 4000}])
    await run(parse_scenario(data), tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    relays = [row for row in rows if row["kind"] == "relay"]
    syncs = [row for row in rows if row["kind"] == "sync" and row["data"]["pool"] == f"LKM_A/{B}"
             and row["data"]["keys_received"]]
    assert len(relays) >= 3 and len(syncs) == len(relays)
    assert all(row["data"]["delay_s"] == pytest.approx(0.021) for row in relays)
    assert all(row["data"]["duration_s"] == pytest.approx(0.042) for row in syncs)


async def test_exposure_in_relay_line_is_every_relayed_key_seen_by_the_middle_km(
        tmp_path: Path) -> None:
    """In relay_line every key between LKM_A (KM1) and LKM_B (KM3) crosses KM2. By hand: the
    keys the slices received (the sync events of the slices at both ends) are the keys KM2
    saw, each 8192 bits."""
    data = yaml.safe_load((ROOT / "scenarios/relay_line.yaml").read_text())
    outcome = await run(parse_scenario(data), tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    slices = {"LKM_A/SAE_BOB_001", "LKM_A/SAE_CAROL_001", "LKM_B/SAE_ALICE_001"}
    keys = sum(row["data"]["keys_received"] for row in rows
               if row["kind"] == "sync" and row["data"]["pool"] in slices)
    assert keys > 0
    assert outcome.summary["exposure"] == {
        "KM2": {"LKM_A<->LKM_B": {"keys": keys, "bits": keys * 8192}}}
    assert "KM2         LKM_A<->LKM_B" in (tmp_path / "out/summary.txt").read_text()


async def test_the_three_routing_policies_on_routing_compare(tmp_path: Path) -> None:
    table = await compare(ROOT / "scenarios/routing_compare.yaml", tmp_path, "1d")
    assert set(table) == {"fewest_hops", "widest", "key_aware"}
    fewest, widest, aware = table["fewest_hops"], table["widest"], table["key_aware"]
    # fewest hops starves the direct link and fails sends; the others take the detour
    assert fewest["failed_sends"] > 5 * max(widest["failed_sends"], aware["failed_sends"], 1)
    assert widest["utilisation_spread"] < fewest["utilisation_spread"]
    # the detour costs a hop: relays take longer, and KM3 sees more keys
    assert widest["mean_relay_delay_ms"] > fewest["mean_relay_delay_ms"]
    assert widest["keys_seen_by_trusted_nodes"] > fewest["keys_seen_by_trusted_nodes"]
    assert (tmp_path / "fewest_hops/summary.json").is_file()


async def _slow_line_sync(net, down_after_s: float) -> tuple[dict, int, object]:
    """A manual sync of Bob's slice at LKM_A over LINE with 10 min per hop, KM2 going down
    ``down_after_s`` into it: what the links had relayed before, Bob's home pool before, and
    the sync's record once the clock settled."""
    from nodes.keynode.messages import Sync
    from nodes.network.km import SetDown
    from nodes.network.link import GetAccount
    from tests.test_network import call, pools

    for edge in net.links:
        net.set_latency(edge, 600.0)
    status, _ = await call(net, "LKM_A", A, "POST", "/api/v1/keys/" + B + "/enc_keys",
                           json={"number": 3})
    assert status == 200
    await net.sim.settle()
    relayed = {edge: (await ref.ask(GetAccount()))["relayed_bits"]
               for edge, ref in net.links.items()}
    home = (await pools(net, "LKM_B"))[B]
    await net.lkm_refs["LKM_A"].ask(Sync("manual", (B,)))
    await net.sim.run(net.sim.clock.now() + down_after_s)
    net.kms["KM2"].tell(SetDown(True, "test"))
    await net.sim.run(net.sim.clock.now() + 4 * 3600)
    syncs = [e for e in net.sim.recorder.events_of("sync") if e.get("pool") == f"LKM_A/{B}"]
    return relayed, home, [e for e in syncs if e.get("reason") == "manual"][-1]


async def test_a_km_down_under_the_ask_fails_the_sync_with_nothing_shipped(tmp_path) -> None:
    """The ask walks KM1 -> KM2 -> KM3 (10 min a hop): KM2 goes down before it arrives, so the
    try ends there, its answer is back at KM1 10 min later, and no other path exists."""
    from nodes.network.link import GetAccount
    from tests.test_network import LINE, network, pools

    async with network(tmp_path, topology(LINE)) as net:
        relayed, home, cut = await _slow_line_sync(net, 60)
        assert {edge: (await ref.ask(GetAccount()))["relayed_bits"]
                for edge, ref in net.links.items()} == relayed
        assert (await pools(net, "LKM_B"))[B] == home
        assert cut.get("outcome") == "unreachable"
        assert cut.get("duration_s") == pytest.approx(1200.0)
        assert net.sim.system.failures == []


async def test_a_km_down_under_the_keys_sends_them_home(tmp_path) -> None:
    """The keys left KM3 at 20 min and reach KM2 at 30 min, which went down at 25: the try ends
    there (KM2 would have spent the KM2-KM3 hop, so nothing was spent); the keys are back in
    Bob's home pool 10 min later, and the answer reaches KM1 then too."""
    from nodes.network.link import GetAccount
    from tests.test_network import LINE, network, pools

    async with network(tmp_path, topology(LINE)) as net:
        relayed, home, cut = await _slow_line_sync(net, 1500)
        assert {edge: (await ref.ask(GetAccount()))["relayed_bits"]
                for edge, ref in net.links.items()} == relayed
        assert (await pools(net, "LKM_B"))[B] == home
        assert cut.get("outcome") == "unreachable"
        assert cut.get("duration_s") == pytest.approx(2400.0)
        assert net.sim.system.failures == []


def random_graphs(seed: int, count: int) -> Iterator[tuple[random.Random, nx.Graph, str, str]]:
    """``count`` random connected-or-not graphs of 2-40 KMs, each with two of its KMs."""
    rng = random.Random(seed)
    for trial in range(count):
        n = rng.randint(2, 40)
        graph = nx.gnm_random_graph(n, rng.randint(n - 1, 3 * n), seed=trial)
        graph = nx.relabel_nodes(graph, {i: f"KM{i}" for i in graph.nodes})
        a, b = rng.sample(sorted(graph.nodes), 2)
        yield rng, graph, a, b


def first_of_all_shortest(graph: nx.Graph, a: str, b: str) -> list[str] | None:
    try:
        return min(nx.all_shortest_paths(graph, a, b))
    except nx.NetworkXNoPath:
        return None


def test_the_first_shortest_path_is_min_of_all_shortest_paths_on_random_graphs() -> None:
    # the BFS that replaced min(all_shortest_paths) must choose exactly the same path
    for trial, (_, graph, a, b) in enumerate(random_graphs(3, 300)):
        assert first_shortest_path(graph, a, b) == first_of_all_shortest(graph, a, b), trial


def test_the_path_avoiding_links_and_kms_is_the_first_of_the_networkx_view() -> None:
    # the search on the graph's adjacency must choose the path the filtered view gave
    for trial, (rng, graph, a, b) in enumerate(random_graphs(5, 400)):
        edges = sorted(edge_key(x, y) for x, y in graph.edges)
        bad_edges = set(rng.sample(edges, rng.randint(0, len(edges) // 3)))
        bad_nodes = set(rng.sample(sorted(graph.nodes), rng.randint(0, len(graph) // 3))) | {a}
        view = nx.subgraph_view(
            graph, filter_node=lambda x: x in (a, b) or x not in bad_nodes,
            filter_edge=lambda x, y: edge_key(x, y) not in bad_edges)
        want = first_of_all_shortest(view, a, b)
        assert shortest_path(graph, a, b, bad_edges, bad_nodes) == want, trial


async def test_each_hop_is_spent_at_its_master_end_as_the_keys_pass(tmp_path) -> None:
    """KM3 asks KM1 for keys over KM1 - KM2 - KM3, 10 min a hop: the ask reaches KM1 at 20 min.
    KM1 keeps the books of KM1-KM2 and KM2 those of KM2-KM3 (the first end in name order), so
    the keys spend KM1-KM2 as they leave KM1 (20 min) and KM2-KM3 as they leave KM2 (30 min);
    they reach KM3 at 40 min."""
    from tests.test_network import KEY_BITS, LINE, levels, network

    slow = [{**link, "rate_bps": 1e-6, "buffer_bits": 10**9} for link in LINE]  # no refill
    async with network(tmp_path, topology(slow)) as net:
        for edge in net.links:
            net.set_latency(edge, 600.0)
        await net.sim.settle()
        before = await levels(net)
        task = net.sim.start_task(net.km_network.relay("KM1", "KM3", KEY_BITS, 2))
        seen = []
        for at_s in (1199, 1201, 1799, 1801, 2399):
            await net.sim.run(at_s)
            now = await levels(net)
            seen.append(tuple(round(before[edge] - now[edge]) for edge in sorted(now)))
            assert not task.done()
        await net.sim.run(2401)
        assert task.result() == (["KM1", "KM2", "KM3"], 2, "ok")
    paid = 2 * KEY_BITS + 128
    assert seen == [(0, 0), (paid, 0), (paid, 0), (paid, paid), (paid, paid)]


async def test_widest_routes_on_the_link_state_collected_the_round_before_last(tmp_path) -> None:
    """Two equal paths, KM1-KM2-KM4 and KM1-KM3-KM4, rounds every hour. Just after the start,
    KM2-KM4 loses most of its key. Until the round after next, widest still sees it full and
    keeps to the first path in name order, which can still carry the key; from 2 h on it
    sees the loss and takes the other path."""
    from nodes.network.link import Spend
    from tests.test_network import SQUARE, levels, network, relay

    still = [{**link, "rate_bps": 1e-6} for link in SQUARE]  # no refill
    data = topology(still, kms=4, routing="widest", routing_update="1h")
    async with network(tmp_path, data) as net:
        drained = edge_key("KM2", "KM4")
        assert await net.links[drained].ask(Spend(9_000_000))
        await net.sim.run(60)
        first = await relay(net, "KM4", "KM1", 1)
        await net.sim.run(3601)  # one round: it read the loss, but routes use the one before
        second = await relay(net, "KM4", "KM1", 1)
        await net.sim.run(7201)  # the loss is now the round before last
        third = await relay(net, "KM4", "KM1", 1)
        assert (await levels(net))[drained] < 1_000_000
    assert first == second == (["KM4", "KM2", "KM1"], 1, "ok")
    assert third == (["KM4", "KM3", "KM1"], 1, "ok")


async def test_the_order_a_scenario_lists_its_parts_in_changes_nothing_that_happens(
        tmp_path: Path) -> None:
    """relay_line with its KMs, links, LKMs, users and flows listed backwards: actors are built
    and their first timers pushed in the other order, yet every event and every sample is the
    same (as sets: listing order still orders the rows of one instant). A partitioned run
    builds each region's part alone, in its own order. Before relays acted only where they
    were (decision 66), 1,691 of relay_line's 2,301 events differed this way."""
    data = yaml.safe_load((ROOT / "scenarios/relay_line.yaml").read_text())
    backwards = {**data, **{key: list(reversed(data[key]))
                            for key in ("kms", "links", "lkms", "saes", "traffic")}}
    rows = []
    for name, scenario in (("as_listed", data), ("backwards", backwards)):
        await run(parse_scenario(scenario), tmp_path / name)
        rows.append([sorted((tmp_path / name / file).read_text().splitlines())
                     for file in ("events.jsonl", "metrics.csv")])
    assert len(rows[0][0]) > 2000
    assert rows[0] == rows[1]
