"""Partitioned runs (issue 19): one scenario split into regions on a local Ray instance gives
the bytes of the run in one process; a region actor killed mid-run fails the run clearly,
naming the region and the simulated time, with its outputs marked partial; a split with no
lookahead is refused before anything runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from nodes.parallel import RegionFailed, run_partitioned
from nodes.run import ScenarioError, parse_scenario, run
from nodes.run.generate import city
from tests.test_partition import ring

ROOT = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (a run started without one starts its own)."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="qkdsim",
             object_store_memory=128 * 1024 * 1024)
    yield
    ray.shutdown()


def scenario_file(name: str, **changes: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "scenarios" / f"{name}.yaml").read_text())
    # mail between regions takes at least the lookahead (a hop: 1 ms or more)
    return {**data, "mail_delay": "10ms", **changes}


def forty() -> dict[str, Any]:
    """A generated 40-KM city with an outage of every kind that crosses regions."""
    return {**city(kms=40, lkms=40, users=80, duration="12h", seed=11, name="forty"),
            "mail_delay": "1s",
            "outages": [{"at": "3h", "target": "KM05", "kind": "down", "for": "2h"},
                        {"at": "4h", "kind": "partition", "groups": [["KM01", "KM02", "KM03"]],
                         "for": "1h"},
                        {"at": "6h", "target": "KM10-KM11", "kind": "latency", "delay": "50ms",
                         "for": "3h"},
                        {"at": "8h", "target": "LKM007", "kind": "crash", "for": "1h"}]}


def outputs(out: Path) -> dict[str, bytes]:
    """Every file a run leaves but the SQLite files (whose pages are SQLite's business)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] != "state"}


CASES = {
    "relay_line": (lambda: scenario_file("relay_line"), (2, 3)),
    "routing_compare": (lambda: scenario_file("routing_compare", duration="12h",
                                              routing="key_aware"), (2, 3)),
    "forty": (forty, (2, 4)),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(CASES))
async def test_regions_on_ray_give_the_bytes_of_one_process(name: str, tmp_path: Path,
                                                           local_ray: None) -> None:
    data, splits = CASES[name]
    scenario = parse_scenario(data())
    one = await run(scenario, tmp_path / "one")
    expected = outputs(tmp_path / "one")
    assert {"metrics.csv", "events.jsonl", "summary.json", "report.html"} <= set(expected)
    events = (tmp_path / "one" / "events.jsonl").read_text()
    assert '"kind":"relay"' in events and one.summary["audit"]["mails_sent"] > 0
    for n in (1, *splits):
        split = await run_partitioned(scenario, tmp_path / f"n{n}", n, "ray")
        assert outputs(tmp_path / f"n{n}") == expected, f"{name} with {n} regions"
        assert split.exit_code == one.exit_code and split.steps == one.steps
        lkms = {p.name for p in (tmp_path / f"n{n}" / "state").glob("*.db")}
        assert len(lkms) == len(scenario.lkms)  # each region wrote its own LKMs' files


async def test_regions_in_this_process_give_the_same_bytes(tmp_path: Path) -> None:
    scenario = parse_scenario(forty())
    await run(scenario, tmp_path / "one")
    await run_partitioned(scenario, tmp_path / "two", 2, "local")
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    assert not (tmp_path / "two" / "regions").exists()


@pytest.mark.timeout(300)
async def test_a_killed_region_actor_fails_the_run_naming_it_and_marks_outputs_partial(
        tmp_path: Path, local_ray: None) -> None:
    scenario = parse_scenario({**forty(), "duration": "7d"})
    halfway = asyncio.Event()

    def progress(now_s: float, until_s: float) -> None:
        if now_s > 6 * 3600:
            halfway.set()

    running = asyncio.ensure_future(run_partitioned(scenario, tmp_path / "out", 2, "ray",
                                                    answer_s=60, progress=progress))
    await asyncio.wait_for(halfway.wait(), 240)
    ray.kill(ray.get_actor("qkdsim-region-1", namespace="qkdsim"))
    with pytest.raises(RegionFailed) as failed:
        await asyncio.wait_for(running, 120)
    message = str(failed.value)
    assert message.startswith("region 1 (KMs ") and ") died (" in message
    at = float(message.split("at t=")[1].split()[0])
    assert 6 * 3600 < at < 7 * 86400
    assert "outputs are partial" in message
    out = tmp_path / "out"
    assert (out / "PARTIAL").read_text().strip() == message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["simulated_s"] == round(at, 6)
    times = [float(line.split(",")[0]) for line in
             (out / "metrics.csv").read_text().splitlines()[1:]]
    assert times and max(times) <= at  # what both regions recorded before, merged


async def test_cut_links_that_take_no_time_are_refused_before_anything_runs(
        tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="partitions: no lookahead: cut links KM"):
        await run_partitioned(parse_scenario(ring("0s")), tmp_path / "out", 2, "local")
    assert not (tmp_path / "out").exists()


def test_the_command_runs_regions_and_names_a_bad_split(tmp_path: Path) -> None:
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(scenario_file("relay_line")))
    ok = subprocess.run([sys.executable, "run_scenario.py", str(path), "--partitions", "2",
                         "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "events.jsonl").stat().st_size > 0
    bad = subprocess.run([sys.executable, "run_scenario.py", str(path), "--partitions", "9"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "partitions: partitions must be between 1 and the number of KMs (3)" in bad.stderr
    alone = subprocess.run([sys.executable, "run_scenario.py", str(path), "--engine", "ray"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "--engine and --address go with --partitions" in alone.stderr
