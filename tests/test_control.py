"""Outages started and ended now on a served network (the plugin's start_outage/end_outage):
validated like a scenario's, named errors for bad input, recorded like scheduled ones, and an
ended outage restores service."""

from __future__ import annotations

import json

import httpx
import pytest

from nodes.run import OutageError

NETWORK = {
    "name": "control", "duration": "1d", "seed": 1,
    "defaults": {"pool_size": 100},
    "kms": [{"id": "KM1"}, {"id": "KM2"}],
    "links": [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 150000, "warmup": "1h"}],
    "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM2"}],
    "saes": [{"id": "SAE_A", "email": "a@example.com", "lkm": "LKM_A"},
             {"id": "SAE_B", "email": "b@example.com", "lkm": "LKM_B"}],
}


BAD = [
    ("down", "KM9", {}, "target: unknown target 'KM9'"),
    ("meltdown", "KM1", {}, "kind: input should be 'down'"),
    ("degrade", "KM1-KM2", {}, "fraction: required for kind 'degrade'"),
    ("degrade", "KM1-KM2", {"fraction": 2}, "fraction: "),
    ("down", "KM1", {"at": "1h"}, "at: an injected outage starts now"),
    ("crash", "KM1", {}, "kind: an outage of kind 'crash' cannot target a KM"),
    ("down", "KM1", {"for_": "-1h"}, "for: "),
    ("partition", "KM1", {"groups": [["KM1"]]}, "target: not used by kind 'partition'"),
]


def test_a_bad_outage_is_refused_naming_the_field_and_changes_nothing(qkd_network) -> None:
    net = qkd_network(NETWORK)
    for kind, target, fields, named in BAD:
        with pytest.raises(OutageError) as refused:
            net.start_outage(kind, target, **fields)
        assert named in str(refused.value), (kind, str(refused.value))
    with pytest.raises(KeyError):
        net.end_outage("injected.99")
    events = (net.stop().out_dir / "events.jsonl").read_text()
    assert '"kind":"outage"' not in events  # nothing was started


def test_an_injected_crash_refuses_service_until_it_ends(qkd_network) -> None:
    net = qkd_network(NETWORK)
    url = f"{net.url_of('SAE_A')}/api/v1/keys/SAE_B/status"
    assert httpx.get(url, headers={"X-SAE-ID": "SAE_A"}).status_code == 200
    crash = net.start_outage("crash", "LKM_A")
    with pytest.raises(httpx.TransportError):
        httpx.get(url, headers={"X-SAE-ID": "SAE_A"}, timeout=5)
    link = net.start_outage("down", "KM1-KM2", for_="1h")  # composes with the crash
    net.end_outage(crash)
    for _ in range(100):  # the LKM restarts on its own file and port
        try:
            if httpx.get(url, headers={"X-SAE-ID": "SAE_A"}, timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
    else:
        pytest.fail("LKM_A did not come back after its crash ended")
    net.end_outage(link)
    events = [json.loads(line) for line in
              (net.stop().out_dir / "events.jsonl").read_text().splitlines()]
    edges = [(e["node"], e["data"]["outage"], e["data"]["phase"]) for e in events
             if e["kind"] == "outage"]
    assert edges == [("LKM_A", "crash", "start"), ("KM1-KM2", "down", "start"),
                     ("LKM_A", "crash", "end"), ("KM1-KM2", "down", "end")]
