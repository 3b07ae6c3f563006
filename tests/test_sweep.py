"""Sweeps: a grid of variants over seeds, run by a process pool here or by Ray (a real local
Ray instance), with the same bytes from both, resumed without rerunning what is done, an
invalid variant reported while the rest complete, and a run whose worker dies retried."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nodes.sweep import load_sweep, mean_interval, run_sweep

ROOT = Path(__file__).resolve().parent.parent
#: a small scenario: one LKM, a KM outage, a day (about a second a run)
BASE = {
    "name": "tiny", "seed": 0, "duration": "1d",
    "defaults": {"pool_size": 150, "sync": {"interval": "24h", "threshold": 0.2,
                                            "emergency": 0.1}},
    "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}],
    "saes": [{"id": "SAE_A", "email": "a@example.com", "lkm": "LKM_A"},
             {"id": "SAE_B", "email": "b@example.com", "lkm": "LKM_A"}],
    "traffic": [{"from": "SAE_A", "to": "SAE_B", "mails_per_hour": 12, "mail_bytes": 1000}],
    "outages": [{"at": "6h", "target": "KM1", "kind": "down", "for": "10h"}],
    "expect": ["no_key_reuse", {"max_failed_sends": 0}],
}


def sweep_file(tmp_path: Path, vary: dict, seeds: object = 2, **extra: object) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"scenario": "base.yaml", "vary": vary, "seeds": seeds,
                                    **extra}))
    return path


GRID = {"defaults.pool_size": [60, 150], "outages.0.for": ["4h", "12h"]}


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "runs").rglob("*"))
            if p.is_file()}


@pytest.mark.timeout(600)
def test_a_2x2x2_sweep_gives_the_same_bytes_locally_and_on_ray(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    sweep = load_sweep(sweep_file(tmp_path, GRID))
    local = run_sweep(sweep, tmp_path / "local", "local", jobs=2)
    on_ray = run_sweep(sweep, tmp_path / "ray", "ray", jobs=2)
    assert len(local.rows) == len(on_ray.rows) == 8 and local.ran == on_ray.ran == 8
    assert files_of(tmp_path / "local") == files_of(tmp_path / "ray")
    assert (tmp_path / "local" / "sweep.csv").read_bytes() == \
        (tmp_path / "ray" / "sweep.csv").read_bytes()
    rows = list(csv.DictReader((tmp_path / "local" / "sweep.csv").open()))
    assert [r["seed"] for r in rows] == ["0", "1"] * 4
    assert {(r["defaults.pool_size"], r["outages.0.for"]) for r in rows} == {
        ("60", "4h"), ("60", "12h"), ("150", "4h"), ("150", "12h")}
    # the figures are what each run's own summary says
    for row in rows:
        summary = json.loads((tmp_path / "local" / "runs" / row["run_id"] /
                              "summary.json").read_text())
        assert float(row["failed_sends"]) == summary["totals"]["failed_sends"]
        assert float(row["mails_delivered"]) == summary["audit"]["mails_received"]
        assert row["status"] == ("ok" if summary["totals"]["failed_sends"] == 0
                                 else "expectations_failed")
    # a longer outage with a smaller pool fails more sends: the sweep can tell them apart
    worst = [float(r["failed_sends"]) for r in rows
             if (r["defaults.pool_size"], r["outages.0.for"]) == ("60", "12h")]
    best = [float(r["failed_sends"]) for r in rows
            if (r["defaults.pool_size"], r["outages.0.for"]) == ("150", "4h")]
    assert min(worst) > max(best)
    plots = sorted(p.name for p in (tmp_path / "local" / "plots").glob("*.png"))
    assert "failed_sends__outages_0_for.png" in plots and len(plots) >= 8
    page = (tmp_path / "local" / "report.html").read_text()
    assert "data:image/png;base64," in page and "src=\"http" not in page


def test_a_rerun_skips_the_runs_already_done(tmp_path: Path) -> None:
    sweep = load_sweep(sweep_file(tmp_path, {"defaults.pool_size": [60, 150]}))
    first = run_sweep(sweep, tmp_path / "out", jobs=2)
    assert (first.ran, first.skipped) == (4, 0)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("events.jsonl")}
    again = run_sweep(sweep, tmp_path / "out", jobs=2)
    assert (again.ran, again.skipped) == (0, 4) and again.rows == first.rows
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing was run again
    # a run that never finished (no sweep_run.json) runs again, alone
    victim = first.rows[1]["run_id"]
    (tmp_path / "out" / "runs" / victim / "sweep_run.json").unlink()
    third = run_sweep(sweep, tmp_path / "out", jobs=2)
    assert (third.ran, third.skipped) == (1, 3) and third.rows == first.rows


def test_an_invalid_variant_is_reported_and_the_others_complete(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, {"defaults.pool_size": [150, -5]}, seeds=1)
    result = subprocess.run([sys.executable, "run_scenario.py", "sweep", str(path), "--out",
                             str(tmp_path / "out"), "--jobs", "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "invalid: defaults.pool_size=-5, seed 0: defaults.pool_size" in result.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert [r["defaults.pool_size"] for r in rows] == ["150", "-5"]
    assert rows[0]["status"] in ("ok", "expectations_failed") and rows[0]["failed_sends"] != ""
    assert rows[1]["status"] == "invalid"
    assert rows[1]["failed_sends"] == "" and "greater than 0" in rows[1]["message"]


@pytest.mark.parametrize("bad, named", [
    ({"defaults.pool_sise": [1, 2]}, "defaults.pool_sise: no field 'pool_sise'"),
    ({"outages.3.for": ["1h"]}, "outages.3.for: index 3 is past the end"),
    ({"seed.x": [1]}, "seed.x: no field 'x'"),
])
def test_a_bad_dotted_path_is_named_and_nothing_runs(tmp_path: Path, bad: dict,
                                                     named: str) -> None:
    result = subprocess.run([sys.executable, "run_scenario.py", "sweep",
                             str(sweep_file(tmp_path, bad)), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_run_whose_worker_dies_is_retried_and_the_sweep_completes(
        tmp_path: Path, monkeypatch, engine: str) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv("QKDSIM_SWEEP_CRASH_ONCE", str(marker))
    sweep = load_sweep(sweep_file(tmp_path, {"defaults.pool_size": [60, 150]}, seeds=1))
    outcome = run_sweep(sweep, tmp_path / "out", engine, jobs=2)
    assert marker.exists()  # a worker did die (os._exit in the middle of its task)
    assert all(row["status"] in ("ok", "expectations_failed") for row in outcome.rows)
    assert outcome.exit_code == 0 and len(outcome.rows) == 2


def test_the_interval_is_students_t() -> None:
    assert mean_interval([5.0]) == (5.0, 0.0)
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3 ** 0.5)


def test_the_example_sweep_loads() -> None:
    sweep = load_sweep(ROOT / "scenarios" / "sweeps" / "pool_vs_outage.yaml")
    assert set(sweep.parameters) >= {"defaults.pool_size", "outages.0.for"}
    assert len(sweep.seeds) >= 5 and sweep.name == "pool_vs_outage"
