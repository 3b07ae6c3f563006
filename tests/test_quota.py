"""Per-sender quotas on a receiver's pool: a sender over its quota gets 429 with Retry-After,
the refusal is recorded and takes nothing, and the other senders to the same user keep
working (the greedy_sender scenario, with and without its quota)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from nodes.keynode import ConfigError, NodeConfig, SenderQuota
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from tests.support import API, served, stored_rows

ROOT = Path(__file__).resolve().parent.parent
GREEDY = ROOT / "scenarios" / "outages" / "greedy_sender.yaml"
ALICE, BOB, CAROL, MALLORY = ("SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001",
                              "SAE_MALLORY_001")


async def run_greedy(tmp_path: Path, quota: bool) -> tuple[dict, list[dict]]:
    data = yaml.safe_load(GREEDY.read_text())
    if not quota:
        del data["defaults"]["sender_quota"]
    out = tmp_path / ("quota" if quota else "open")
    outcome = await run(parse_scenario(data), out)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return outcome.summary, events


async def test_the_quota_holds_the_greedy_sender_back_and_protects_the_others(
        tmp_path: Path) -> None:
    open_run, open_events = await run_greedy(tmp_path, quota=False)
    held, held_events = await run_greedy(tmp_path, quota=True)
    nodes_open, nodes_held = open_run["nodes"], held["nodes"]
    # without a quota, Mallory drains Alice's pool and Bob's and Carol's mails fail with 503
    assert nodes_open["LKM_A/SAE_ALICE_001"]["min_pool_keys"] == 0
    assert nodes_open[BOB]["failed_sends"] > 0 and nodes_open[CAROL]["failed_sends"] > 0
    assert {e["data"]["reason"] for e in open_events
            if e["kind"] == "failure" and e["node"] in (BOB, CAROL)} == {"no_keys"}
    assert not any(e["kind"] == "quota" for e in open_events)
    # with it, only Mallory is refused (429, each refusal a `quota` event), the pool never
    # empties, and everyone else's mail goes through
    for sae in (BOB, CAROL):  # a sender without a row recorded nothing: no failure either
        assert nodes_held.get(sae, {}).get("failed_sends", 0) == 0, sae
    failures = [e for e in held_events if e["kind"] == "failure"]
    assert failures and {(e["node"], e["data"]["reason"]) for e in failures} == {
        (MALLORY, "http_429")}
    refusals = [e for e in held_events if e["kind"] == "quota"]
    assert len(refusals) == len(failures)
    assert {(e["data"]["master"], e["data"]["slave"]) for e in refusals} == {(MALLORY, ALICE)}
    assert nodes_held["LKM_A/SAE_ALICE_001"]["min_pool_keys"] > 0
    # Mallory took at most its quota: 30 keys an hour (the bucket's 30 at the start, plus 30 h^-1)
    taken = sum(e["data"]["keys"] for e in held_events
                if e["kind"] == "delivery" and e["data"]["master"] == MALLORY)
    assert taken <= 30 + 30 * 24
    assert all(r["passed"] for r in held["expectations"])
    assert not all(r["passed"] for r in open_run["expectations"])


async def test_a_sender_over_its_quota_gets_429_with_retry_after_and_loses_nothing(
        tmp_path: Path) -> None:
    quota = SenderQuota(keys_per_hour=3600.0, burst=3)  # a key a second, three at once
    async with served(tmp_path, sender_quota=quota) as node:
        for sae in (ALICE, BOB, MALLORY):
            await node.register(sae, pool=50)
        status, _ = await node.call(MALLORY, "POST", f"{API}/{ALICE}/enc_keys", json={"number": 3})
        assert status == 200
        before = await stored_rows(node.lkm.store, "SELECT status, COUNT(*) FROM quantum_keys "
                                   "WHERE sae_id = ? GROUP BY status", ALICE)
        async with node.session(MALLORY).post(f"{API}/{ALICE}/enc_keys",
                                              json={"number": 2}) as response:
            assert response.status == 429
            retry_after = int(response.headers["Retry-After"])
            body = await response.json()
        assert 1 <= retry_after <= 2 and "quota" in body["message"]
        assert {"keys_requested": 2} in body["details"]
        assert await stored_rows(node.lkm.store, "SELECT status, COUNT(*) FROM quantum_keys "
                                 "WHERE sae_id = ? GROUP BY status", ALICE) == before
        # another sender to the same receiver has its own bucket
        status, body = await node.call(BOB, "POST", f"{API}/{ALICE}/enc_keys", json={"number": 3})
        assert status == 200 and len(body["keys"]) == 3
        # more than the burst can never pass: the request's bounds refuse it (400, not 429)
        status, body = await node.call(MALLORY, "POST", f"{API}/{ALICE}/enc_keys",
                                       json={"number": 4})
        assert status == 400 and "quota" in body["message"]
        await asyncio.sleep(retry_after + 0.1)  # wall time: the bucket refills as promised
        status, body = await node.call(MALLORY, "GET", f"{API}/{ALICE}/enc_keys?number=2")
        assert status == 200 and len(body["keys"]) == 2


def test_a_quota_comes_from_the_environment_or_a_scenario_and_bad_values_are_named() -> None:
    config = NodeConfig.from_env({"SENDER_QUOTA_KEYS_PER_HOUR": "120", "SENDER_QUOTA_BURST": "10"})
    assert config.sender_quota == SenderQuota(120.0, 10)
    assert NodeConfig.from_env({"SENDER_QUOTA_KEYS_PER_HOUR": "7.5"}).sender_quota == \
        SenderQuota(7.5, 8)  # an hour's worth at once, by default
    for env, name in (({"SENDER_QUOTA_KEYS_PER_HOUR": "many"}, "SENDER_QUOTA_KEYS_PER_HOUR"),
                      ({"SENDER_QUOTA_KEYS_PER_HOUR": "5", "SENDER_QUOTA_BURST": "0"},
                       "SENDER_QUOTA")):
        with pytest.raises(ConfigError, match=name):
            NodeConfig.from_env(env)
    data = yaml.safe_load(GREEDY.read_text())
    data["defaults"]["sender_quota"] = {"keys_per_hour": -1}
    with pytest.raises(Exception, match="sender_quota"):
        parse_scenario(data)
