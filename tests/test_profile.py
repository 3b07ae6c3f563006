"""The key-manager profile of one served LKM: strict ETSI by default, QuMail's on request
(a master reads its own key back once, not-found is 404), both with real requests."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
import yaml

from nodes.keynode import ConfigError, NodeConfig
from nodes.run.scenario import ScenarioError, load_scenario
from tests.support import API, Node, decoded, served, store_audit

ALICE, BOB, CAROL = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def qumail_node(tmp_path) -> AsyncIterator[Node]:
    async with served(tmp_path, profile="qumail") as node:
        yield node


async def take(node: Node, number: int) -> dict[str, bytes]:
    for sae in (ALICE, BOB, CAROL):
        await node.register(sae, pool=20)
    status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": number})
    assert status == 200
    return decoded(body["keys"])


async def read(node: Node, caller: str, named: str, ids: list[str]) -> tuple[int, dict]:
    status, body = await node.call(caller, "POST", f"{API}/{named}/dec_keys",
                                   json={"key_IDs": [{"key_ID": i} for i in ids]})
    return status, decoded(body["keys"]) if status == 200 else body


async def test_under_qumails_profile_a_master_reads_its_key_back_once(qumail_node) -> None:
    keys = await take(qumail_node, 3)
    one, two, three = keys
    # the master reads key one back, naming either party in the path; then it is gone for both
    assert await read(qumail_node, ALICE, BOB, [one]) == (200, {one: keys[one]})
    assert (await read(qumail_node, BOB, ALICE, [one]))[0] == 404
    assert (await read(qumail_node, ALICE, ALICE, [one]))[0] == 404
    # the slave reads key two; then the master may not
    assert await read(qumail_node, BOB, ALICE, [two]) == (200, {two: keys[two]})
    assert (await read(qumail_node, ALICE, ALICE, [two]))[0] == 404
    # a third party: 401, nothing consumed; a partly unknown request: 404, nothing consumed
    assert (await read(qumail_node, CAROL, ALICE, [three]))[0] == 401
    status, body = await read(qumail_node, BOB, ALICE, [three, "qk_SAE_BOB_001_999999"])
    assert status == 404 and body["message"] == "one or more keys specified are not found on KME"
    assert await read(qumail_node, ALICE, ALICE, [three]) == (200, {three: keys[three]})
    audit = await store_audit(qumail_node.lkm.store)
    assert audit["status_2"] == 3 and audit.get("status_1", 0) == 0


async def test_strict_etsi_keeps_the_slave_as_the_only_reader(node) -> None:
    keys = await take(node, 2)
    one, two = keys
    assert (await read(node, ALICE, BOB, [one]))[0] == 401
    assert (await read(node, ALICE, ALICE, [one]))[0] == 401
    status, body = await read(node, BOB, ALICE, [one, "qk_SAE_BOB_001_999999"])
    assert status == 400 and body["message"] == "one or more keys specified are not found on KME"
    assert await read(node, BOB, ALICE, [one, two]) == (200, keys)


def test_the_profile_is_read_from_km_profile_and_checked() -> None:
    assert NodeConfig.from_env({"KM_PROFILE": "qumail"}).qumail
    assert not NodeConfig.from_env({}).qumail
    with pytest.raises(ConfigError, match="KM_PROFILE"):
        NodeConfig.from_env({"KM_PROFILE": "lenient"})


def test_a_scenario_names_its_profile_and_status_shape(tmp_path) -> None:
    data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
    scenario = tmp_path / "pair.yaml"
    scenario.write_text(yaml.safe_dump(data))
    loaded = load_scenario(scenario)
    assert {loaded.lkm_settings(lkm.id).profile for lkm in loaded.lkms} == {"qumail"}
    data["lkms"][1]["profile"] = "etsi"
    scenario.write_text(yaml.safe_dump(data))
    loaded = load_scenario(scenario)
    assert [loaded.lkm_settings(lkm.id).profile for lkm in loaded.lkms] == ["qumail", "etsi"]
    data["defaults"]["status_shape"] = "etsi"
    scenario.write_text(yaml.safe_dump(data))
    assert load_scenario(scenario).lkm_settings("LKM_2").status_shape == "etsi"
    data["defaults"]["profile"] = "lenient"
    scenario.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match="defaults.profile"):
        load_scenario(scenario)


async def test_registration_says_when_the_pool_size_differs_from_the_one_asked(node) -> None:
    """Honest answers: a size outside [min, max] is clamped, 0 means the default, and the
    reply says so; a size given as asked carries no note."""
    cases = (("SAE_A_001", 500, 500, None), ("SAE_B_001", 50_000, 10_000, "clamped to [10, 10000]"),
             ("SAE_C_001", 3, 10, "clamped to [10, 10000]"),
             ("SAE_D_001", 0, 1000, "0 means the default, 1000"))
    for sae, asked, given, note in cases:
        status, body = await node.call(None, "POST", f"{API}/register", json={
            "sae_id": sae, "user_email": f"{sae.lower()}@example.com",
            "initial_pool_size": asked})
        assert status == 201 and body["pool_size"] == body["keys_generated"] == given, body
        assert body.get("pool_size_note") == note
        assert body.get("pool_size_requested") == (asked if note else None)


async def test_a_short_pool_says_how_many_keys_are_available(node) -> None:
    for sae in (ALICE, BOB):
        await node.register(sae, pool=20)
    status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": 25})
    assert status == 503
    assert "20 keys of 8192 bits" in body["message"] and "25 keys" in body["message"]
    assert {"available_keys": 20} in body["details"]
