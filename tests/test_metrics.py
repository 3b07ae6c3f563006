"""The recorder: rows in order, lookups, and byte-identical CSV/JSONL export."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.keynode.naming import pool_node
from simulator.metrics import Event, Recorder, format_float, merge_counts


def fed_recorder() -> Recorder:
    """A recorder fed a small, fixed run (floats chosen to expose repr surprises)."""
    recorder = Recorder()
    pool = pool_node("LKM_A", "SAE_BOB_001")
    recorder.sample(0, pool, "pool_keys", 1000)
    recorder.sample(0.1 + 0.2, pool, "pool_keys", 999.0000001)
    recorder.sample(600, pool, "pool_keys", -0.0)
    recorder.sample(600, "KM1-KM2", "link_buffer_bits", 1e-7)
    recorder.event(10.5, "delivery", "LKM_A", pool=pool, keys=3, slave="SAE_BOB_001")
    recorder.event(
        20, "sync", "LKM_A", reason="threshold", pool=pool, outcome="ok", duration_s=1 / 3
    )
    recorder.event(30, "outage", "KM1", phase="start", outage="down", hops=["KM1", "KM2"])
    return recorder


def test_samples_and_events_keep_insertion_order() -> None:
    recorder = fed_recorder()
    assert [s.metric for s in recorder.samples] == ["pool_keys"] * 3 + ["link_buffer_bits"]
    assert [e.kind for e in recorder.events] == ["delivery", "sync", "outage"]


def test_event_data_is_sorted_by_key_and_lists_become_tuples() -> None:
    event = fed_recorder().events[2]
    assert event.data == (("hops", ("KM1", "KM2")), ("outage", "down"), ("phase", "start"))
    assert event.get("phase") == "start" and event.get("missing", 7) == 7


def test_equal_events_compare_equal_whatever_the_keyword_order() -> None:
    first, second = Recorder(), Recorder()
    first.event(1, "failure", "SAE_A", to="SAE_B", reason="no_keys")
    second.event(1, "failure", "SAE_A", reason="no_keys", to="SAE_B")
    assert first.events == second.events
    data = (("reason", "no_keys"), ("to", "SAE_B"))
    assert first.events[0] == Event(1.0, "failure", "SAE_A", data)


def test_series_returns_one_node_metric_in_time_order() -> None:
    series = fed_recorder().series("LKM_A/SAE_BOB_001", "pool_keys")
    assert series == [(0.0, 1000.0), (0.30000000000000004, 999.0000001), (600.0, -0.0)]
    assert fed_recorder().series("LKM_A/SAE_BOB_001", "nothing") == []


def test_nodes_with_lists_the_nodes_of_a_metric_sorted() -> None:
    recorder = Recorder()
    for node in ("LKM_B/X", "LKM_A/Y"):
        recorder.sample(0, node, "pool_keys", 1)
    recorder.sample(0, "KM1", "km_keys", 1)
    assert recorder.nodes_with("pool_keys") == ["LKM_A/Y", "LKM_B/X"]


def test_events_of_filters_by_kind_and_node() -> None:
    recorder = fed_recorder()
    assert len(recorder.events_of("sync")) == 1
    assert recorder.events_of("sync", node="LKM_B") == []
    assert recorder.events_of("outage", node="KM1")[0].get("outage") == "down"


def test_count_events_matches_data_values() -> None:
    recorder = Recorder()
    for reason, outcome in [("threshold", "ok"), ("threshold", "unreachable"), ("manual", "ok")]:
        recorder.event(0, "sync", "LKM_A", reason=reason, outcome=outcome)
    assert recorder.count_events("sync") == 3
    assert recorder.count_events("sync", reason="threshold") == 2
    assert recorder.count_events("sync", reason="threshold", outcome="ok") == 1
    assert recorder.count_events("sync", outcome="missing") == 0


def test_sum_event_data_adds_numbers_and_skips_missing_values() -> None:
    recorder = Recorder()
    recorder.event(0, "delivery", "LKM_A", keys=3)
    recorder.event(1, "delivery", "LKM_A", keys=4)
    recorder.event(2, "delivery", "LKM_A")
    assert recorder.sum_event_data("delivery", "keys") == 7


def test_last_t_s_is_the_latest_row_time() -> None:
    assert fed_recorder().last_t_s() == 600.0
    assert Recorder().last_t_s() == 0.0


def test_a_series_cannot_go_back_in_time() -> None:
    recorder = Recorder()
    recorder.sample(10, "P", "pool_keys", 1)
    with pytest.raises(ValueError, match="goes back in time"):
        recorder.sample(9, "P", "pool_keys", 1)


def test_non_finite_values_and_unserialisable_data_are_refused() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="finite"):
        recorder.sample(0, "P", "pool_keys", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        recorder.event(0, "sync", "LKM_A", duration_s=float("inf"))
    with pytest.raises(TypeError, match="'pool'"):
        recorder.event(0, "sync", "LKM_A", pool=object())
    assert recorder.samples == [] and recorder.events == []


def test_floats_are_formatted_as_repr_of_round_6() -> None:
    assert [format_float(x) for x in (1000, 0.1 + 0.2, -0.0, 1e-7, 2 / 3)] == [
        "1000.0", "0.3", "0.0", "0.0", "0.666667",
    ]


def test_csv_has_the_header_and_rounded_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    fed_recorder().write_csv(path)
    assert path.read_text(encoding="utf-8").splitlines() == [
        "t_s,node,metric,value",
        "0.0,LKM_A/SAE_BOB_001,pool_keys,1000.0",
        "0.3,LKM_A/SAE_BOB_001,pool_keys,999.0",
        "600.0,KM1-KM2,link_buffer_bits,0.0",  # one instant's rows: in text order
        "600.0,LKM_A/SAE_BOB_001,pool_keys,0.0",
    ]


def test_jsonl_has_one_sorted_compact_object_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    fed_recorder().write_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert lines[1] == (
        '{"data":{"duration_s":0.333333,"outcome":"ok","pool":"LKM_A/SAE_BOB_001",'
        '"reason":"threshold"},"kind":"sync","node":"LKM_A","t_s":20.0}'
    )


def test_two_recorders_fed_the_same_rows_write_identical_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        recorder = fed_recorder()
        recorder.write_csv(tmp_path / name / "metrics.csv")
        recorder.write_jsonl(tmp_path / name / "events.jsonl")
    for file in ("metrics.csv", "events.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_a_node_name_with_a_comma_is_quoted_in_csv(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.sample(0, "odd,node", "pool_keys", 1)
    recorder.write_csv(tmp_path / "m.csv")
    row = (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()[1]
    assert row == '0.0,"odd,node",pool_keys,1.0'


def test_merge_counts_nests_and_sorts() -> None:
    pairs = [("threshold", "ok"), ("emergency", "unreachable"), ("threshold", "ok")]
    assert merge_counts(pairs) == {"emergency": {"unreachable": 1}, "threshold": {"ok": 2}}
    assert list(merge_counts(pairs)) == ["emergency", "threshold"]
