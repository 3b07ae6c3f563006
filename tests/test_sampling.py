"""Pool sampling records changes (decision 63): a pool's row when its level changed since its
last row, every pool at the first pass and at the end, and each LKM's ``pools_changed`` mark at
every pass. Readers hold a level until its next row, so they see what dense sampling showed."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from nodes.dashboard import LiveView
from nodes.keynode.messages import ListPools
from nodes.keynode.naming import pool_node
from nodes.run.builder import Network
from nodes.run.expect import POOLS_CHANGED, longest_empty_s, recovery_s
from nodes.run.harness import run
from nodes.run.poolplots import plot_pools_overview
from nodes.run.report import plot_pool_levels
from nodes.run.scenario import parse_scenario
from simulator import Recorder, Sample
from simulator.runtime import Simulation

INTERVAL_S = 600.0


def scenario(duration: str = "6h", **extra: object) -> dict:
    """Three users on two LKMs of one KM; Alice mails often, Carol never sends."""
    users = [("SAE_ALICE_001", "LKM_A"), ("SAE_BOB_001", "LKM_A"), ("SAE_CAROL_001", "LKM_B")]
    return {
        "name": "sampling", "seed": 7, "duration": duration, "sample_interval": "10m",
        "transport": "direct", "defaults": {"pool_size": 200},
        "kms": [{"id": "KM1"}], "links": [],
        "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM1"}],
        "saes": [{"id": sae, "email": f"{sae.lower()}@example.com", "lkm": lkm}
                 for sae, lkm in users],
        "traffic": [{"from": "SAE_ALICE_001", "to": "SAE_BOB_001", "mails_per_hour": 2,
                     "mail_bytes": 2000}],
        **extra,
    }


async def test_each_pass_writes_the_pools_that_changed_and_readers_see_every_level(
        tmp_path: Path) -> None:
    data = scenario()
    sim = Simulation(data["seed"])
    net = Network(parse_scenario(data), sim, tmp_path)
    held: dict[str, float] = {}
    truth_before: dict[str, int] = {}
    written = dense = 0
    try:
        await net.start()
        for k in range(int(6 * 3600 / INTERVAL_S)):
            await sim.clock.run(k * INTERVAL_S)  # the pass at k * interval has run
            passed = [r for r in sim.recorder.samples if r.t_s == k * INTERVAL_S]
            truth = {pool_node(lkm, sae): keys for lkm in ("LKM_A", "LKM_B")
                     for sae, keys in await net.lkm_refs[lkm].ask(ListPools(levels_only=True))}
            level_rows = [r for r in passed if r.metric == "pool_keys"]
            held.update({r.node: r.value for r in level_rows})
            assert held == truth, f"pass {k}"  # held levels are the pools' levels
            changed = {pool for pool, keys in truth.items() if truth_before.get(pool) != keys}
            assert {r.node for r in level_rows} == changed
            marks = {r.node: r.value for r in passed if r.metric == POOLS_CHANGED}
            assert marks == {lkm: sum(p.startswith(lkm + "/") for p in changed)
                             for lkm in ("LKM_A", "LKM_B")}
            truth_before = truth
            written, dense = written + len(level_rows), dense + len(truth)
    finally:
        await net.close()
        await sim.shutdown()
    assert 0 < written < dense / 3  # Carol's pools and the quiet stretches write nothing


def metrics_rows(out: Path) -> list[tuple[float, str, str, float]]:
    with (out / "metrics.csv").open() as handle:
        return [(float(r["t_s"]), r["node"], r["metric"], float(r["value"]))
                for r in csv.DictReader(handle)]


async def test_every_pool_has_one_row_at_the_end_of_a_run(tmp_path: Path) -> None:
    for duration, end_s in (("6h", 21600.0), ("65m", 3900.0)):  # on and off the passes' grid
        out = tmp_path / duration
        outcome = await run(parse_scenario(scenario(duration)), out)
        assert outcome.exit_code == 0
        rows = metrics_rows(out)
        pools = {node for _, node, metric, _ in rows if metric == "pool_keys"}
        at_end = [node for t_s, node, metric, _ in rows if metric == "pool_keys" and t_s == end_s]
        assert sorted(at_end) == sorted(pools) and len(pools) >= 3, duration
        first = {node for t_s, node, metric, _ in rows if metric == "pool_keys" and t_s == 0.0}
        assert first == pools


def step_cases(seed: int, cases: int = 300) -> list[tuple[list, list, list, float]]:
    """Random pools read at passes every 600 s: (dense readings, change-only readings with
    every pool at the end, the passes, an outage's end)."""
    rng = random.Random(seed)
    out = []
    for _ in range(cases):
        passes = [i * 600.0 for i in range(rng.randint(1, 40))]
        level, dense = rng.choice([0, 5, 50]), []
        for t_s in passes:
            if rng.random() < 0.3:
                level = rng.choice([0, 0, 10, 40, 60, 100])
            dense.append((t_s, float(level)))
        sparse = [row for i, row in enumerate(dense) if i == 0 or row[1] != dense[i - 1][1]]
        if sparse[-1][0] != passes[-1]:
            sparse.append(dense[-1])  # the closing row
        out.append((dense, sparse, [(t, 0.0) for t in passes], rng.uniform(0, passes[-1])))
    return out


def test_expectations_read_change_only_rows_as_they_read_every_pass() -> None:
    for dense, sparse, passes, end_s in step_cases(63):
        assert longest_empty_s(sparse) == longest_empty_s(dense)
        for thresholds in ([(0.0, 40.0)], [(0.0, 40.0), (1800.0, 60.0)]):
            assert recovery_s(sparse, thresholds, end_s, passes) == \
                recovery_s(dense, thresholds, end_s)


def recorders(pools: int, seed: int) -> tuple[Recorder, Recorder]:
    dense, sparse = Recorder(), Recorder()
    cases = step_cases(seed, pools)
    for index, (dense_rows, sparse_rows, _, _) in enumerate(cases):
        node = f"LKM_{index % 4}/SAE_{index:03d}"
        for target, rows in ((dense, dense_rows), (sparse, sparse_rows)):
            for t_s, value in rows:
                target.sample(t_s, node, "pool_keys", value)
    return dense, sparse


def test_the_plots_of_many_pools_draw_the_same_from_change_only_rows() -> None:
    # every pool read at every pass (the dense rows end at the same last pass), so the
    # envelope and the overview have a value per pool at each time
    dense, sparse = recorders(300, 1)
    for recorder in (dense, sparse):
        for node in recorder.nodes_with("pool_keys"):
            t_last, value = recorder.series(node, "pool_keys")[-1]
            for t_s in range(int(t_last) + 600, 24000, 600):
                if recorder is dense:
                    recorder.sample(float(t_s), node, "pool_keys", value)
            if recorder is sparse and t_last < 23400:
                recorder.sample(23400.0, node, "pool_keys", value)
    lines = [{line.get_label(): list(line.get_ydata()) for line in
              plot_pool_levels(r, "t", []).axes[0].lines if "all pools" in line.get_label()}
             for r in (dense, sparse)]
    assert lines[0] == lines[1] and len(lines[0]) == 2
    overviews = [plot_pools_overview(r, "t", []) for r in (dense, sparse)]
    heat = [figure.axes[1].images[0].get_array().tolist() for figure in overviews]
    assert heat[0] == heat[1]
    lowest = [[list(line.get_ydata()) for line in figure.axes[0].lines
               if line.get_label() == "lowest of all pools"] for figure in overviews]
    assert lowest[0] == lowest[1]


def test_the_live_view_holds_unchanged_pools_at_each_pass() -> None:
    view = LiveView()
    pools = [f"LKM_A/SAE_{i:02d}" for i in range(20)]  # over the page's line limit: aggregate
    for t_s in (0.0, 600.0, 1200.0):
        for i, pool in enumerate(pools):
            if t_s == 0.0 or i == int(t_s // 600):  # one pool changes at each later pass
                view(Sample(t_s, pool, "pool_keys", 100.0 - t_s / 60 - i))
        view(Sample(t_s, "LKM_A", POOLS_CHANGED, 20.0 if t_s == 0.0 else 1.0))
    snapshot = view.since(0)
    assert [point["t_s"] for point in snapshot["aggregate"]] == [0.0, 600.0, 1200.0]
    # at 1200 s: pool 1 went to 89 at 600 s and holds it; pool 2 went to 78; the rest hold
    assert snapshot["aggregate"][-1]["min"] == 78.0
    assert snapshot["aggregate"][-1]["max"] == 100.0
    assert list(view.pools[pools[5]]) == [(0.0, 95.0), (600.0, 95.0), (1200.0, 95.0)]
