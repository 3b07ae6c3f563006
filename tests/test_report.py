"""The report: PNGs drawn from recorded rows, repeatable bytes, and the summary counts."""

from __future__ import annotations

import json
from pathlib import Path

from nodes.run.report import (
    MAX_POOL_LINES,
    format_summary_table,
    outage_windows_from_events,
    plot_pool_levels,
    summarise,
    write_report,
)
from simulator.metrics import Recorder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOB = "LKM_A/SAE_BOB_001"
ALICE = "LKM_A/SAE_ALICE_001"


def small_run() -> Recorder:
    """Two pools over 6 hours: Bob's drains, syncs at threshold, fails once during an outage."""
    recorder = Recorder()
    for pool in (BOB, ALICE):
        recorder.sample(0, pool, "pool_threshold_keys", 100)
    levels = {BOB: [1000, 600, 200, 90, 1000, 400, 0], ALICE: [1000, 950, 900, 850, 800, 750, 700]}
    for hour in range(7):
        for pool, series in levels.items():
            recorder.sample(hour * 3600, pool, "pool_keys", series[hour])
    recorder.event(1800, "delivery", "LKM_A", keys=400, pool=BOB, master="SAE_ALICE_001")
    recorder.event(5400, "delivery", "LKM_A", keys=450, pool=BOB, master="SAE_ALICE_001")
    recorder.event(5400, "delivery", "LKM_A", keys=50, pool=ALICE, master="SAE_BOB_001")
    recorder.event(3 * 3600, "sync", "LKM_A", pool=BOB, reason="threshold", outcome="ok")
    recorder.event(4 * 3600, "outage", "KM1", phase="start", outage="down")
    recorder.event(5 * 3600, "sync", "LKM_A", pool=BOB, reason="emergency", outcome="unreachable")
    recorder.event(5.5 * 3600, "failure", "SAE_ALICE_001", to="SAE_BOB_001", reason="no_keys")
    recorder.event(6 * 3600, "outage", "KM1", phase="end", outage="down")
    return recorder


def test_write_report_writes_non_empty_pngs_and_the_summary(tmp_path: Path) -> None:
    paths = write_report(small_run(), "small", tmp_path, [(4 * 3600, 6 * 3600, "down KM1")])
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "plots/pool_levels.png", "plots/deliveries.png", "summary.json", "summary.txt",
    ]
    for png in paths[:2]:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    summary = json.loads(paths[2].read_text(encoding="utf-8"))
    assert summary["totals"]["keys_delivered"] == 900


def test_the_same_rows_give_the_same_png_bytes(tmp_path: Path) -> None:
    first = write_report(small_run(), "small", tmp_path / "a")
    second = write_report(small_run(), "small", tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_different_rows_give_a_different_pool_plot(tmp_path: Path) -> None:
    changed = small_run()
    changed.event(6 * 3600, "sync", "LKM_A", pool=ALICE, reason="manual", outcome="ok")
    first = write_report(small_run(), "small", tmp_path / "a")[0]
    second = write_report(changed, "small", tmp_path / "b")[0]
    assert first.read_bytes() != second.read_bytes()


def test_an_empty_recording_still_gives_plots(tmp_path: Path) -> None:
    paths = write_report(Recorder(), "empty", tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_the_summary_counts_per_node() -> None:
    summary = summarise(small_run(), "small")
    nodes = summary["nodes"]
    assert isinstance(nodes, dict)
    assert list(nodes) == ["LKM_A", ALICE, BOB, "SAE_ALICE_001"]
    assert nodes["LKM_A"]["keys_delivered"] == 900
    assert nodes["LKM_A"]["syncs"] == {"emergency": {"unreachable": 1}, "threshold": {"ok": 1}}
    assert nodes["SAE_ALICE_001"]["failed_sends"] == 1
    assert nodes[BOB]["min_pool_keys"] == 0 and nodes[ALICE]["min_pool_keys"] == 700
    assert summary["totals"] == {
        "keys_generated": 0, "keys_relayed": 0, "keys_delivered": 900, "keys_consumed": 0,
        "failed_sends": 1,
        "syncs": {"emergency": {"unreachable": 1}, "threshold": {"ok": 1}},
    }


def test_the_summary_table_is_fixed_width_with_a_total_row() -> None:
    table = format_summary_table(summarise(small_run(), "small"))
    lines = table.splitlines()
    assert lines[0] == "small"
    assert lines[1].split("  ")[0] == "node" and lines[1].endswith("min pool keys")
    lkm = next(line for line in lines if line.startswith("LKM_A "))
    assert "900" in lkm and "emergency 0/1, threshold 1/1" in lkm
    assert lines[-1].split()[:6] == ["TOTAL", "0", "0", "900", "0", "1"]
    header_end = lines[1].index("min pool keys") + len("min pool keys")
    alice = next(line for line in lines if line.startswith(ALICE))
    assert alice.endswith(" 700") and len(alice) == header_end


def test_outage_windows_pair_start_and_end_events() -> None:
    assert outage_windows_from_events(small_run()) == [(4 * 3600, 6 * 3600, "down KM1")]


def test_an_outage_without_an_end_runs_to_the_end_of_the_recording() -> None:
    recorder = Recorder()
    recorder.event(100, "outage", "LKM_B", phase="start", outage="crash")
    recorder.sample(900, BOB, "pool_keys", 5)
    assert outage_windows_from_events(recorder) == [(100.0, 900.0, "crash LKM_B")]


def test_many_pools_draw_a_bounded_number_of_lines_with_the_lowest_and_median() -> None:
    recorder = Recorder()
    pools = [f"LKM_A/SAE_{i:03d}" for i in range(MAX_POOL_LINES + 25)]
    for hour in range(3):
        for i, pool in enumerate(pools):
            recorder.sample(hour * 3600, pool, "pool_keys", 100 - hour * i)
    for i, pool in enumerate(pools):
        recorder.event(3600, "sync", "LKM_A", pool=pool, reason="threshold", outcome="ok")
    ax = plot_pool_levels(recorder, "many", []).axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert len(ax.lines) == MAX_POOL_LINES + 2 + 1  # pools, lowest and median, one marker line
    lowest = ax.lines[labels.index("lowest of all pools")]
    assert list(lowest.get_ydata()) == [100, 100 - (len(pools) - 1), 100 - 2 * (len(pools) - 1)]

