"""Record a served (wall-clock) session, replay it in virtual time: the same deliveries result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from nodes.run.harness import run
from nodes.run.scenario import load_scenario
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
A, B = "SAE_ALICE_001", "SAE_BOB_001"
API = "/api/v1/keys"


def topology(ports: tuple[int, int]) -> dict:
    return {
        "name": "recorded", "seed": 9, "duration": "1h", "clock": "wall",
        "defaults": {"pool_size": 50, "slice_size": 20},
        "kms": [{"id": "KM1"}, {"id": "KM2"}],
        "links": [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 100000,
                   "warmup": "1h"}],
        "lkms": [{"id": "LKM_A", "km": "KM1", "port": ports[0]},
                 {"id": "LKM_B", "km": "KM2", "port": ports[1]}],
        "saes": [{"id": A, "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": B, "email": "bob@example.com", "lkm": "LKM_B"}],
    }


def deliveries(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [(e["kind"], e["node"], tuple(sorted(e["data"].items()))) for e in rows
            if e["kind"] in ("delivery", "consumed")]


async def external_session(urls: dict[str, str]) -> None:
    """What a client does against the served pair: mail both ways, and some mistakes."""
    async with aiohttp.ClientSession() as session:
        async def post(lkm: str, caller: str, path: str, body: dict) -> dict:
            async with session.post(urls[lkm] + path, json=body,
                                    headers={"X-SAE-ID": caller}) as response:
                return {"status": response.status, **json.loads(await response.text())}

        for _ in range(3):
            sent = await post("LKM_A", A, f"{API}/{B}/enc_keys", {"number": 2})
            ids = [{"key_ID": k["key_ID"]} for k in sent["keys"]]
            assert (await post("LKM_B", B, f"{API}/{A}/dec_keys", {"key_IDs": ids}))["status"] == 200
        back = await post("LKM_B", B, f"{API}/{A}/enc_keys", {"number": 1})
        assert back["status"] == 200
        assert (await post("LKM_A", A, f"{API}/{B}/enc_keys", {"number": 0}))["status"] == 400
        assert (await post("LKM_B", B, f"{API}/{A}/dec_keys",
                           {"key_IDs": [{"key_ID": "qk_nobody_000001"}]}))["status"] == 400


async def test_a_recorded_session_replays_to_the_same_deliveries(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    served = tmp_path / "served.yaml"
    served.write_text(yaml.safe_dump(topology(ports)))
    trace = tmp_path / "trace.jsonl"
    process = subprocess.Popen(
        [sys.executable, "run_scenario.py", str(served), "--serve", "--record", str(trace),
         "--out", str(tmp_path / "served")], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "serving recorded" in line:
                break
        await external_session({"LKM_A": f"http://127.0.0.1:{ports[0]}",
                                "LKM_B": f"http://127.0.0.1:{ports[1]}"})
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
    finally:
        if process.poll() is None:
            process.kill()
    recorded = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(recorded) == 9 and all("key" not in json.dumps(r["body"]).replace("key_ID", "")
                                      for r in recorded)

    replay = topology((0, 0))
    replay.update(name="replayed", clock="virtual", traffic=[{"replay": str(trace)}])
    for lkm in replay["lkms"]:
        del lkm["port"]
    scenario_path = tmp_path / "replay.yaml"
    scenario_path.write_text(yaml.safe_dump(replay))
    outcome = await run(load_scenario(scenario_path), tmp_path / "replayed")
    assert outcome.exit_code == 0
    assert deliveries(tmp_path / "replayed") == deliveries(tmp_path / "served")
    assert len(deliveries(tmp_path / "served")) == 7
    replays = [json.loads(line)["data"] for line in
               (tmp_path / "replayed/events.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "replay"]
    assert [r["status"] for r in replays] == [r["recorded_status"] for r in replays] == \
        [r["status"] for r in recorded]


async def test_a_replayed_manual_sync_is_answered_in_virtual_time(tmp_path: Path) -> None:
    """A recorded POST /km/sync waits for its sync: replayed in virtual time, the sync's worker
    starts at once (it used to wait for a clock step that the waiting replay itself held back,
    and the run hung)."""
    trace = tmp_path / "trace.jsonl"
    requests = [
        {"t_s": 3600.0, "lkm": "LKM_A", "method": "POST", "caller": A, "status": 200,
         "path": f"{API}/{B}/enc_keys", "body": {"number": 30}},
        {"t_s": 7200.0, "lkm": "LKM_A", "method": "POST", "caller": A, "status": 200,
         "path": f"{API}/km/sync", "body": {}},
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in requests))
    scenario_path = tmp_path / "replay.yaml"
    scenario_path.write_text(yaml.safe_dump({
        "name": "replay_sync", "duration": "4h", "defaults": {"pool_size": 100},
        "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}],
        "saes": [{"id": A, "email": "alice@example.com", "lkm": "LKM_A"},
                 {"id": B, "email": "bob@example.com", "lkm": "LKM_A"}],
        "traffic": [{"replay": "trace.jsonl"}]}))
    outcome = await run(load_scenario(scenario_path), tmp_path / "out")
    assert outcome.exit_code == 0 and outcome.actor_failures == ()
    events = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    assert [(e["t_s"], e["data"]["status"]) for e in events if e["kind"] == "replay"] == [
        (3600.0, 200), (7200.0, 200)]
    [sync] = [e for e in events if e["kind"] == "sync" and e["data"]["reason"] == "manual"]
    assert (sync["t_s"], sync["data"]["outcome"], sync["data"]["keys_received"]) == (7200.0, "ok", 30)


def test_a_trace_cut_short_by_a_kill_loads_up_to_its_last_whole_line(tmp_path: Path) -> None:
    from nodes.traffic.trace import load_trace

    entry = {"t_s": 1.5, "lkm": "LKM_A", "method": "GET", "path": "/health", "caller": None,
             "body": None, "status": 200}
    whole = json.dumps(entry, sort_keys=True) + "\n"
    trace = tmp_path / "trace.jsonl"
    trace.write_text(whole + whole.replace("1.5", "2.5") + whole[:30])
    assert [e.t_s for e in load_trace(trace)] == [1.5, 2.5]
    trace.write_text(whole + "not json\n" + whole)  # a bad line in the middle is an error
    with pytest.raises(ValueError, match="trace.jsonl:2: not a trace line"):
        load_trace(trace)
