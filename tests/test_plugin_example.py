"""How a client project tests against a simulated QKD network, written as one would: the
``qkd_network`` fixture (qkdsim's pytest plugin, found through its entry point, not imported),
a third-party ETSI GS QKD 014 client (``etsi-qkd-014-client``) and plain ``httpx``."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
from etsi_qkd_014_client import QKD014Client

ROOT = Path(__file__).resolve().parent.parent
#: the client project's own network: two sites, a QKD link between their KMs
TWO_SITES = {
    "name": "client_two_sites", "seed": 3, "duration": "1d",
    "defaults": {"pool_size": 200},
    "kms": [{"id": "KM1"}, {"id": "KM2"}],
    "links": [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 150000, "warmup": "1h"}],
    "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM2"}],
    "saes": [{"id": "SAE_ALICE", "email": "alice@example.com", "lkm": "LKM_A"},
             {"id": "SAE_BOB", "email": "bob@example.com", "lkm": "LKM_B"}],
    "expect": ["no_key_reuse", "all_received_keys_match"],
}


def https_client(net, sae: str) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(net.ca_cert))
    context.load_cert_chain(*map(str, net.certs[sae]))
    return httpx.Client(base_url=net.url_of(sae), verify=context, timeout=30)


def test_an_etsi_client_gets_keys_through_an_outage(qkd_network) -> None:
    net = qkd_network(TWO_SITES, tls=True)
    cert, key = net.certs["SAE_ALICE"]
    alice = QKD014Client(net.url_of("SAE_ALICE").removeprefix("https://"), str(cert), str(key),
                         str(net.ca_cert))
    code, status = alice.get_status("SAE_BOB")
    assert code == 200 and status.stored_key_count > 0
    taken: dict[str, bytes] = {}
    with https_client(net, "SAE_BOB") as bob:
        for during_outage in (False, True):
            if during_outage:  # the link between the sites fails; Alice's LKM holds a slice
                outage = net.start_outage("down", "KM1-KM2")
            code, container = alice.get_key("SAE_BOB", number=2)
            assert code == 200, container
            ids = [k.key_id for k in container.keys]
            reply = bob.post("/api/v1/keys/SAE_ALICE/dec_keys",
                             json={"key_IDs": [{"key_ID": i} for i in ids]})
            assert reply.status_code == 200, reply.text
            for sent, read in zip(container.keys, reply.json()["keys"]):
                assert read["key_ID"] == sent.key_id and read["key"] == sent.key
                taken[sent.key_id] = base64.b64decode(sent.key)
        net.end_outage(outage)
    summary = net.stop().summary
    assert summary["totals"]["keys_delivered"] == summary["totals"]["keys_consumed"] == 4
    assert len(taken) == 4 and len(set(taken.values())) == 4
    outage_edges = [line for line in (net.out_dir / "events.jsonl").read_text().splitlines()
                    if '"kind":"outage"' in line]
    assert len(outage_edges) == 2  # recorded like a scheduled outage: a start and an end


def test_qumail_pair_serves_level_3_over_plain_http(qkd_network) -> None:
    node1, node2 = ("25840139-0dd4-49ae-ba1e-b86731601803", "c565d5aa-8670-4446-8471-b0e53e315d2a")
    net = qkd_network(ROOT / "scenarios" / "qumail_pair.yaml")
    with httpx.Client(timeout=30) as http:
        sent = http.post(f"{net.url_of(node1)}/api/v1/keys/{node2}/enc_keys",
                         headers={"X-SAE-ID": node1}, json={"number": 1, "size": 256})
        assert sent.status_code == 200, sent.text
        [key] = sent.json()["keys"]
        ids = {"key_IDs": [{"key_ID": key["key_ID"]}]}
        read = http.post(f"{net.url_of(node2)}/api/v1/keys/{node1}/dec_keys",
                         headers={"X-SAE-ID": node2}, json=ids)
        assert read.status_code == 200 and read.json()["keys"] == [key]
        again = http.post(f"{net.url_of(node2)}/api/v1/keys/{node1}/dec_keys",
                          headers={"X-SAE-ID": node2}, json=ids)
        assert again.status_code == 404  # QuMail's profile: a key is read once, then not found
    assert net.stop().summary["totals"]["keys_consumed"] == 1
