"""Records that stream: rows reach metrics.csv and events.jsonl as they are recorded (flushed
at least every second), per-request events are kept only as running totals, a served run killed
with SIGKILL leaves its files, and `run_scenario.py report DIR` rebuilds its report from them."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from itertools import groupby
from pathlib import Path

import aiohttp
import pytest
import yaml

import simulator.metrics
from nodes.run import load_scenario
from nodes.run.builder import Network
from simulator import Simulation
from simulator.metrics import Recorder, Sample, event_json, format_float
from tests.test_metrics import fed_recorder
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
N1 = "25840139-0dd4-49ae-ba1e-b86731601803"
N2 = "c565d5aa-8670-4446-8471-b0e53e315d2a"
API = "/api/v1/keys"


def feed(recorder: Recorder) -> None:
    """The rows of tests.test_metrics.fed_recorder, plus deliveries over three hours."""
    for sample in fed_recorder().samples:
        recorder.sample(sample.t_s, sample.node, sample.metric, sample.value)
    for event in fed_recorder().events:
        recorder.event(event.t_s, event.kind, event.node, **dict(event.data))
    for t_s, keys in ((100.0, 2), (3700.0, 5), (7300.5, 1), (7400.0, 4)):
        recorder.event(t_s, "delivery", "LKM_B", keys=keys, pool="LKM_B/SAE_ALICE_001")
    recorder.event(7500.0, "failure", "SAE_ALICE_001", to="SAE_BOB_001", reason="no_keys")


def test_a_streaming_recorder_writes_the_bytes_of_one_that_writes_at_the_end(
        tmp_path: Path) -> None:
    kept = Recorder()
    feed(kept)
    kept.write_csv(tmp_path / "metrics.csv")
    kept.write_jsonl(tmp_path / "events.jsonl")
    streaming = Recorder()
    streaming.summarise("delivery", "failure")
    (tmp_path / "s").mkdir()
    streaming.stream_to(tmp_path / "s")
    feed(streaming)
    streaming.close()
    for name in ("metrics.csv", "events.jsonl"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / name).read_bytes()
    # the per-request kinds are not held, but their totals answer as the events did
    assert [e.kind for e in streaming.events] == ["sync", "outage"]
    with pytest.raises(ValueError, match="summarised"):
        streaming.events_of("delivery")
    for kind, key in (("delivery", "keys"), ("failure", "keys")):
        assert streaming.count_events(kind) == kept.count_events(kind)
        assert streaming.sum_event_data(kind, key) == kept.sum_event_data(kind, key)
        assert streaming.nodes_of(kind) == kept.nodes_of(kind)
    assert streaming.count_events("delivery", "LKM_B") == 4
    assert streaming.per_hour("delivery", 3, "keys") == kept.per_hour("delivery", 3, "keys") \
        == [2.0 + 3.0, 5.0, 5.0]
    assert streaming.per_hour("failure", 3) == [0.0, 0.0, 1.0]
    assert streaming.last_t_s() == kept.last_t_s() == 7500.0


def test_a_streaming_recorder_holds_no_rows_and_answers_from_its_files(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.stream_to(tmp_path)
    tracemalloc.start()
    try:
        # what the recorder's own code allocated and still holds: not another thread's
        # allocations, nor the interpreter's table of interned strings, which sys.intern of
        # 20,000 new names may grow (one block of 7.5 MB once earlier tests had interned
        # enough) and never shrinks: a cost per distinct name, not per row
        metrics = inspect.getsourcefile(simulator.metrics)
        assert metrics is not None
        interning = [number for number, line in
                     enumerate(Path(metrics).read_text().splitlines(), start=1)
                     if "sys.intern(" in line]
        assert len(interning) == 2  # the node of an event, and its data's strings
        ours = [tracemalloc.Filter(True, "*/simulator/*")] + [
            tracemalloc.Filter(False, metrics, lineno) for lineno in interning]
        before = tracemalloc.take_snapshot().filter_traces(ours)
        for i in range(20_000):  # a kind the report reads one by one: kept on file only
            recorder.event(i * 10.0, "sync", f"LKM_{i % 50}", pool=f"LKM_{i % 50}/SAE_{i}",
                           reason="threshold", outcome="ok" if i % 4 else "timeout", keys=3)
            recorder.sample(i * 10.0, f"LKM_{i % 50}/SAE_x", "pool_keys", float(i % 7))
        after = tracemalloc.take_snapshot().filter_traces(ours)
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    # in memory these rows took 10.8 MB; the totals per node and per hour take far less
    assert grown < 1_000_000, f"{grown:,} bytes"
    recorder.close()
    assert recorder.count_events("sync") == 20_000
    assert recorder.count_events("sync", outcome="timeout") == 5_000  # read from the file
    assert recorder.count_events("sync", "LKM_4", outcome="ok") == 200
    assert recorder.sum_event_data("sync", "keys", "LKM_0") == 1_200
    assert [e.t_s for e in recorder.iter_events("sync", "LKM_7")][:2] == [70.0, 570.0]
    assert recorder.series("LKM_3/SAE_x", "pool_keys")[:2] == [(30.0, 3.0), (530.0, 4.0)]
    assert len(recorder.nodes_with("pool_keys")) == 50
    assert recorder.last_t_s() == 199_990.0


def test_a_recorder_opened_on_a_runs_files_answers_as_the_run_did(tmp_path: Path) -> None:
    streaming = Recorder()
    streaming.summarise("delivery", "failure")
    streaming.stream_to(tmp_path)
    feed(streaming)
    streaming.close()
    opened = Recorder.from_files(tmp_path, "delivery", "failure")
    # what the files hold: each float rounded to 6 decimals
    # and the rows of one instant in the order of their text (decision 70)
    samples = [Sample(round(s.t_s, 6), s.node, s.metric, round(s.value, 6))
               for _, instant in groupby(fed_recorder().samples, key=lambda s: format_float(s.t_s))
               for s in sorted(instant, key=lambda s: (s.node, s.metric, format_float(s.value)))]
    events = [json.loads(line) for _, instant in groupby(fed_recorder().events,
                                                         key=lambda e: format_float(e.t_s))
              for line in sorted(event_json(e) for e in instant if e.kind != "delivery")]
    for recorder in (streaming, opened):
        assert recorder.samples == samples
        assert [json.loads(event_json(e)) for e in recorder.events] == events
        assert recorder.per_hour("delivery", 3, "keys") == [5.0, 5.0, 5.0]
        assert recorder.nodes_of("failure") == ["SAE_ALICE_001"]
        assert recorder.last_t_s() == 7500.0
        with pytest.raises(ValueError, match="summarised"):
            recorder.count_events("delivery", pool="LKM_B/SAE_ALICE_001")


def test_rows_reach_the_file_within_a_second_of_wall_time(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.stream_to(tmp_path)
    recorder.event(1.0, "sync", "LKM_A", outcome="ok")
    time.sleep(1.05)
    recorder.event(2.0, "sync", "LKM_A", outcome="ok")  # a row after a second flushes the
    lines = (tmp_path / "events.jsonl").read_text().splitlines()  # instants before its own
    assert len(lines) == 1
    recorder.event(3.0, "sync", "LKM_A", outcome="ok")
    recorder.flush()  # what a served run's one-second timer calls in a quiet stretch
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3
    recorder.close()


async def test_a_served_run_samples_every_5_s_unless_its_scenario_says(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
    assert "sample_interval" not in data
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    assert Network(scenario, Simulation(0, "wall"), tmp_path, serving=True).sample_interval_s == 5
    assert Network(scenario, Simulation(0), tmp_path).sample_interval_s == 600
    data["sample_interval"] = "1m"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    assert Network(scenario, Simulation(0, "wall"), tmp_path, serving=True).sample_interval_s == 60


async def pairs(urls: tuple[str, str], count: int, keys: int) -> int:
    """Enc at node 1, dec at node 2, ``count`` times; the keys delivered."""
    delivered = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(f"{urls[0]}{API}/{N2}/enc_keys", headers={"X-SAE-ID": N1},
                                    json={"number": keys, "size": 256}) as response:
                assert response.status == 200
                body = await response.json()
            ids = [{"key_ID": k["key_ID"]} for k in body["keys"]]
            async with session.post(f"{urls[1]}{API}/{N1}/dec_keys", headers={"X-SAE-ID": N2},
                                    json={"key_IDs": ids}) as response:
                assert response.status == 200
                read = await response.json()
            assert [base64.b64decode(k["key"]) for k in read["keys"]] == [
                base64.b64decode(k["key"]) for k in body["keys"]]
            delivered += len(body["keys"])
    return delivered


def test_a_killed_served_run_leaves_its_records_and_its_report_is_rebuilt(
        tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
    ports = [free_port(), free_port()]
    for lkm, port in zip(data["lkms"], ports):
        lkm["port"] = port
    scenario, out = tmp_path / "pair.yaml", tmp_path / "out"
    scenario.write_text(yaml.safe_dump(data))
    process = subprocess.Popen(
        [sys.executable, "run_scenario.py", str(scenario), "--serve", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ.copy())
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("serving"):
                break
        urls = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
        delivered = asyncio.run(pairs(urls, 60, 3))
        time.sleep(1.5)  # past the next flush
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # the run never reported
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    taken = [e for e in events if e["kind"] == "delivery"]
    read = [e for e in events if e["kind"] == "consumed"]
    assert (len(taken), len(read)) == (60, 60)
    assert sum(e["data"]["keys"] for e in taken) == sum(e["data"]["keys"] for e in read) \
        == delivered == 180
    assert sum(1 for line in (out / "metrics.csv").read_text().splitlines()[1:]
               if ",pool_keys," in line) >= 2  # sampled at the start, on both nodes
    with (out / "events.jsonl").open("a") as torn:  # a kill in the middle of a line
        torn.write('{"data":{"keys":3},"kind":"deliv')
    rebuilt = subprocess.run([sys.executable, "run_scenario.py", "report", str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    assert "repaired: events.jsonl: dropped a torn last line" in rebuilt.stderr
    assert (out / "events.jsonl").read_text().endswith("\n")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["keys_delivered"] == summary["totals"]["keys_consumed"] == 180
    assert (out / "plots" / "pool_levels.png").is_file()
    assert all(e["passed"] is not False for e in summary["expectations"])


def test_report_of_a_folder_without_a_run_is_a_usage_error(tmp_path: Path) -> None:
    rebuilt = subprocess.run([sys.executable, "run_scenario.py", "report", str(tmp_path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rebuilt.returncode == 2 and "cannot rebuild" in rebuilt.stderr


def test_a_finished_runs_report_is_rebuilt_from_its_files_to_the_same_figures(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    ran = subprocess.run([sys.executable, "run_scenario.py", "scenarios/outages/lkm_crash.yaml",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    before = json.loads((out / "summary.json").read_text())
    rebuilt = subprocess.run([sys.executable, "run_scenario.py", "report", str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr + rebuilt.stdout
    after = json.loads((out / "summary.json").read_text())
    assert before["totals"]["syncs"], "the scenario syncs: the figures below are not empty"
    for key in ("nodes", "totals", "exposure", "simulated_s"):
        assert after[key] == before[key], key
    # the audit needs the live key stores: only its two expectations are not evaluated again
    verdicts = {e["name"]: e["passed"] for e in before["expectations"]}
    for name, passed in ((e["name"], e["passed"]) for e in after["expectations"]):
        assert passed == (None if name in ("no_key_reuse", "all_received_keys_match")
                          else verdicts[name]), name
