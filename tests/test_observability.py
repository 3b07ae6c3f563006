"""What an LKM tells its operators: /metrics in Prometheus text format, one structured log line
per request, and never a byte of key material in either."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from pathlib import Path

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from tests.support import API, Node, decoded, stored_rows

ALICE, BOB, CAROL, EVE = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001", "SAE_EVE_001"
ENC = "/api/v1/keys/{slave}/enc_keys"
DEC = "/api/v1/keys/{master}/dec_keys"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by (sample name, labels without node)."""
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "node")
            result[(sample.name, labels)] = sample.value
    return result


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


async def scrape(node: Node) -> tuple[str, dict]:
    status, text = await node.call(None, "GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    return text, samples(text)


async def session(node: Node) -> list[dict]:
    """Deliveries, reads, refusals of every kind, a manual sync and a failed one; the keys."""
    for sae in (ALICE, BOB, CAROL):
        await node.register(sae, pool=20)
    keys = []
    for number, size in ((3, 256), (1, 8192), (2, 1024)):
        status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys",
                                       json={"number": number, "size": size})
        assert status == 200
        keys += body["keys"]
    status, body = await node.call(ALICE, "GET", f"{API}/{CAROL}/enc_keys",
                                   params={"number": "2"})
    carol_keys = body["keys"]
    keys += carol_keys
    ids = [k["key_ID"] for k in keys[:4]]
    assert (await node.call(BOB, "POST", f"{API}/{ALICE}/dec_keys",
                            json={"key_IDs": [{"key_ID": i} for i in ids]}))[0] == 200
    assert (await node.call(BOB, "GET", f"{API}/{ALICE}/dec_keys",
                            params={"key_ID": ids[0]}))[0] == 400  # read twice
    assert (await node.call(CAROL, "GET", f"{API}/{ALICE}/dec_keys",
                            params={"key_ID": keys[4]["key_ID"]}))[0] == 401  # not its key
    assert (await node.call(EVE, "POST", f"{API}/{BOB}/enc_keys"))[0] == 401
    assert (await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys",
                            json={"number": 100}))[0] == 503
    assert (await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"size": 12}))[0] == 400
    assert (await node.call(ALICE, "GET", f"{API}/nobody/status"))[0] == 404
    assert (await node.call(CAROL, "POST", f"{API}/{ALICE}/dec_keys",
                            json={"key_IDs": [{"key_ID": k["key_ID"]} for k in carol_keys]}
                            ))[0] == 200
    assert (await node.call(None, "POST", f"{API}/km/sync", json={}))[0] == 200
    node.lkm.supply.up = False
    assert (await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys"))[0] == 200
    assert (await node.call(None, "POST", f"{API}/km/sync", json={"users": [BOB]}))[0] == 200
    node.lkm.supply.up = True
    assert (await node.call(BOB, "POST", f"{API}/mark_consumed",
                            json={"key_ID": ids[0]}))[0] == 404  # read already
    assert (await node.call(BOB, "POST", f"{API}/mark_consumed",
                            json={"key_ID": keys[5]["key_ID"]}))[0] == 200  # delivered, unread
    return keys


async def test_metrics_count_pools_deliveries_failures_syncs_and_latency(node: Node) -> None:
    await session(node)
    text, metrics = await scrape(node)
    status, pools = await node.call(ALICE, "GET", f"{API}/pools")
    for pool in pools["pools"]:
        sae = pool["sae_id"]
        assert value(metrics, "qkdsim_pool_available_keys", sae=sae) == pool["available_keys"]
        assert value(metrics, "qkdsim_pool_available_bits", sae=sae) == pool["available_bits"]
        assert value(metrics, "qkdsim_pool_used_keys", sae=sae) == pool["used_keys"]
        assert value(metrics, "qkdsim_pool_limit_keys", sae=sae) == pool["pool_size_limit"]
    assert value(metrics, "qkdsim_pools") == 3
    assert value(metrics, "qkdsim_keys_delivered_total", role="master") == 9
    assert value(metrics, "qkdsim_keys_delivered_total", role="slave") == 6
    for reason, count in (("unauthorized", 2), ("insufficient_keys", 1), ("not_found", 2),
                          ("keys_not_found", 1), ("size_not_multiple_of_8", 1)):
        found = sum(v for (name, labels), v in metrics.items()
                    if name == "qkdsim_request_failures_total" and ("reason", reason) in labels)
        assert found == count, (reason, found)
    assert value(metrics, "qkdsim_syncs_total", reason="manual", outcome="ok") >= 1
    assert value(metrics, "qkdsim_syncs_total", reason="manual", outcome="unreachable") == 1
    assert value(metrics, "qkdsim_km_available") == 0  # the last sync found the KM down
    enc_count = value(metrics, "qkdsim_request_duration_seconds_count", route=ENC)
    assert enc_count == 8  # 5 delivered (1 by GET), 1 unauthorized, 1 exhausted, 1 bad size
    assert value(metrics, "qkdsim_requests_total", route=ENC, method="POST", status="200") == 4
    assert value(metrics, "qkdsim_request_duration_seconds_bucket", route=ENC, le="+Inf") == 8
    assert value(metrics, "qkdsim_request_duration_seconds_sum", route=ENC) > 0


async def test_each_lkm_has_its_own_registry_and_the_global_one_stays_empty(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await Node(tmp_path / "a", local_km_id="LKM_A").start()
    second = await Node(tmp_path / "b", local_km_id="LKM_B").start()
    try:
        await first.register(ALICE)
        await first.register(BOB)
        await second.register(CAROL)
        await first.call(ALICE, "POST", f"{API}/{BOB}/enc_keys")
        for node, name, saes in ((first, "LKM_A", {ALICE, BOB}), (second, "LKM_B", {CAROL})):
            text, _ = await scrape(node)
            families = list(text_string_to_metric_families(text))
            nodes = {s.labels["node"] for f in families for s in f.samples if "node" in s.labels}
            pools = {s.labels["sae"] for f in families if f.name == "qkdsim_pool_available_keys"
                     for s in f.samples}
            assert nodes == {name} and pools == saes
        _, metrics = await scrape(second)
        assert value(metrics, "qkdsim_keys_delivered_total", role="master") == 0
    finally:
        await first.close()
        await second.close()
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("qkdsim")]


async def test_one_log_line_per_request_with_node_sae_method_route_status_duration(
        tls_node: Node, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="qkdsim.access")
    for sae in (ALICE, BOB):
        await tls_node.register(sae)
    await tls_node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": 2})
    await tls_node.call(EVE, "GET", f"{API}/{BOB}/status")
    records = [r for r in caplog.records if r.name == "qkdsim.access"]
    assert len(records) == 4
    assert [(r.levelname, r.sae, r.method, r.route, r.status) for r in records] == [
        ("DEBUG", ALICE, "POST", "/api/v1/keys/register", 201),
        ("DEBUG", BOB, "POST", "/api/v1/keys/register", 201),
        ("DEBUG", ALICE, "POST", ENC, 200),
        ("INFO", EVE, "GET", "/api/v1/keys/{slave}/status", 401)]
    assert all(r.node == "LOCAL_KM_001" and r.duration_s >= 0 for r in records)
    assert records[-1].reason == "unauthorized"
    line = records[2].getMessage()
    assert line.startswith("request node=LOCAL_KM_001 sae=SAE_ALICE_001 method=POST")
    assert f"route={ENC} status=200 duration_s=" in line and "\n" not in line


async def test_at_info_only_refused_requests_are_logged(node: Node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="qkdsim.access")
    for sae in (ALICE, BOB):
        await node.register(sae)
    for _ in range(3):
        assert (await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys"))[0] == 200
    assert (await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"size": 12}))[0] == 400
    records = [r for r in caplog.records if r.name == "qkdsim.access"]
    assert [(r.levelname, r.sae, r.status, r.reason) for r in records] == [
        ("INFO", ALICE, 400, "size_not_multiple_of_8")]
    _, metrics = await scrape(node)  # the answered ones are counted all the same
    assert value(metrics, "qkdsim_requests_total", route=ENC, method="POST", status="200") == 3


def fingerprints(material: bytes) -> list[str]:
    """Strings that would betray (a prefix of) the material in text (as in the ETSI suite)."""
    text = base64.b64encode(material).decode("ascii")
    return [text, text[:24], material[:12].hex(), repr(material[:12])[2:-1]]


async def test_no_key_material_in_any_log_line_or_metric_of_a_busy_session(
        node: Node, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    keys = await session(node)
    text, _ = await scrape(node)
    status, pools = await node.call(ALICE, "GET", f"{API}/pools")
    rows = await stored_rows(node.lkm.store,
                             "SELECT key_data FROM quantum_keys WHERE key_data IS NOT NULL")
    materials = list(decoded(keys).values()) + [bytes(r[0]) for r in rows]
    assert len(materials) > 50
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert Counter(r.name for r in caplog.records)["qkdsim.access"] >= 20
    for material in materials:
        for fingerprint in fingerprints(material):
            assert fingerprint not in logged and fingerprint not in text


async def test_metric_label_sets_stay_bounded_whatever_the_methods_and_paths(node: Node) -> None:
    """A client may send any method token and any path: the labels name the route template
    and a known method (or OTHER), so a fuzzer cannot grow the registry without bound."""
    methods = ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "MOVE")
    for i in range(40):
        status, _ = await node.call(ALICE, methods[i % len(methods)], f"{API}/nobody{i}/status")
        assert 400 <= status < 500
        assert (await node.call(ALICE, "GET", f"/no/such/path/{i}"))[0] == 404
    text, metrics = await scrape(node)
    methods = {dict(labels).get("method") for name, labels in metrics
               if name == "qkdsim_requests_total"}
    routes = {dict(labels).get("route") for name, labels in metrics
              if name == "qkdsim_requests_total"}
    assert methods <= {"GET", "OTHER"} and "OTHER" in methods, methods
    assert len(routes) <= 3 and not any("nobody" in str(r) for r in routes), routes
