"""Links that bind, end to end: partial top-ups, outages that change what a link relays, the
capacity warning, and the metro scenario's bottleneck."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from nodes.network.link import Level
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from tests.test_network import KEY_BITS, A, B, network, pools, topology
from tests.test_outages import assert_links_balance

ROOT = Path(__file__).resolve().parent.parent


def events(out: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [row for row in rows if row["kind"] == kind]


async def test_a_top_up_the_links_cannot_fully_carry_relays_what_they_hold(tmp_path) -> None:
    """Each hop holds 5 keys' worth (plus one relay's authentication): the slice's top-up of 40
    is served with 5, recorded as partial, and the other 35 stay in Bob's home pool."""
    hold = 5 * KEY_BITS + 128
    line = [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 1e-6, "initial_bits": hold},
            {"a": "KM2", "b": "KM3", "model": "fixed", "rate_bps": 1e-6, "initial_bits": hold}]
    async with network(tmp_path, topology(line)) as net:
        assert (await pools(net, "LKM_A"))[B] == 5
        assert (await pools(net, "LKM_B"))[B] == 95  # 100 - the 5 that were carried
        assert [await ref.ask(Level()) for ref in net.links.values()] == [0, 0]
        relays = net.sim.recorder.events_of("relay")
        assert [(e.get("keys"), e.get("requested"), e.get("partial")) for e in relays] == [
            (5, 40, True)]
        syncs = [e for e in net.sim.recorder.events_of("sync") if e.get("pool") == f"LKM_A/{B}"]
        assert [(e.get("outcome"), e.get("keys_requested"), e.get("keys_received"))
                for e in syncs] == [("ok", 40, 5)]


async def test_an_empty_path_ends_the_sync_no_key_with_nothing_shipped(tmp_path) -> None:
    line = [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 1e-6},
            {"a": "KM2", "b": "KM3", "model": "fixed", "rate_bps": 1e-6}]
    async with network(tmp_path, topology(line)) as net:
        assert (await pools(net, "LKM_A"))[B] == 0
        assert (await pools(net, "LKM_B"))[B] == 100
        [failure] = net.sim.recorder.events_of("relay_failure")
        assert failure.get("cause") == "no_key"
        [sync] = [e for e in net.sim.recorder.events_of("sync") if e.get("pool") == f"LKM_A/{B}"]
        assert sync.get("outcome") == "no_key"


def bottleneck_line(**outage) -> dict:
    """Alice mails Bob across one 80 km decoy-state link that cannot keep up with her."""
    return {
        "name": "bottleneck", "seed": 2, "duration": "12h", "transport": "direct",
        "sample_interval": "10m",
        "defaults": {"pool_size": 400},
        "kms": [{"id": "KM1"}, {"id": "KM2"}],
        "links": [{"a": "KM1", "b": "KM2", "model": "decoy_bb84", "length_km": 80,
                   "params": {"alpha_db_per_km": 0.3, "loss_extra_db": 3}, "warmup": "1h"}],
        "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM2"}],
        "saes": [{"id": A, "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": B, "email": "bob@example.com", "lkm": "LKM_B"}],
        "traffic": [{"from": A, "to": B, "mails_per_hour": 60, "mail_bytes": 20000}],
        "outages": [{"at": "2h", "target": "KM1-KM2", "for": "8h", **outage}] if outage else [],
    }


async def test_degrade_and_qber_rise_lower_what_a_binding_link_relays(tmp_path) -> None:
    relayed = {}
    for name, outage in (("none", {}), ("degrade", {"kind": "degrade", "fraction": 0.3}),
                         ("qber", {"kind": "qber_rise", "qber": 0.06}),
                         ("abort", {"kind": "qber_rise", "qber": 0.2})):
        outcome = await run(parse_scenario(bottleneck_line(**outage)), tmp_path / name)
        [link] = outcome.summary["links"]
        assert_links_balance([link])
        relayed[name] = link["relayed_bits"]
        if name == "none":
            assert link["utilisation"] >= 0.8  # the link binds
        if name == "abort":
            assert link["time_in_state_s"]["ABORT"] == 8 * 3600
            assert link["qber_peak"] == 0.2
    assert relayed["none"] > relayed["qber"] > relayed["abort"]
    assert relayed["none"] > relayed["degrade"] > relayed["abort"]
    # the degraded 8 h make 30 % of the key: what is relayed falls by most of the other 70 %
    hour_bits = relayed["none"] / 12
    assert relayed["none"] - relayed["degrade"] > 0.5 * 0.7 * 8 * hour_bits


def test_validate_warns_of_a_slice_no_link_can_carry_and_the_run_still_mails(tmp_path) -> None:
    """two_sites with pool_size 3000: a slice's full top-up is 1500 keys (12,288,000 bits)
    against a 10 Mbit link buffer. Validation says so (and still passes: top-ups are partial);
    the run mails, where all-or-nothing top-ups used to fail every send."""
    data = yaml.safe_load((ROOT / "scenarios/two_sites.yaml").read_text())
    data["defaults"]["pool_size"] = 3000
    data["duration"] = "1d"
    data["outages"] = []
    path = tmp_path / "big_pools.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, str(ROOT / "run_scenario.py"), "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (f"{path}: warning: slice LKM_A/SAE_BOB_001: a full top-up of 1500 keys "
            "(12,288,000 bits) can never fit link KM1-KM2 (buffer_bits 10,000,000) on its path "
            "from KM2 to KM1, nor any other path") in done.stderr
    assert "ok (two_sites)" in done.stdout
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "run_scenario.py"), str(path), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert "warning: slice LKM_B/SAE_ALICE_001" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audit"]["mails_received"] > 300
    partial = [e for e in events(out, "relay") if e["data"].get("partial")]
    assert partial  # the opening top-ups were served in part


async def test_metro_capacity_has_one_binding_link_that_fails_sends(tmp_path) -> None:
    data = yaml.safe_load((ROOT / "scenarios/metro_capacity.yaml").read_text())
    data["duration"] = "2d"
    outcome = await run(parse_scenario(data), tmp_path / "metro")
    assert outcome.exit_code == 0
    links = {link["link"]: link for link in outcome.summary["links"]}
    assert_links_balance(list(links.values()))
    bottleneck = links.pop("DC-C1")
    assert bottleneck["utilisation"] >= 0.8
    assert bottleneck["time_empty_s"] > 3600
    assert all(link["utilisation"] < 0.1 for link in links.values())
    failures = events(tmp_path / "metro", "failure")
    across = [f for f in failures if f["data"]["to"] == "SAE_BACKUP" or f["node"] == "SAE_MAILHUB"]
    assert len(across) > 100 and {f["data"]["reason"] for f in across} == {"no_keys"}
    assert (tmp_path / "metro/plots/links.png").stat().st_size > 10_000
