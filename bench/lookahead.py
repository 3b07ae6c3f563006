#!/usr/bin/env python3
"""What a conservative partitioned run of a scenario would cost: a model fed by measurements.

Written before the partitioned engine existed (issue 19; ``bench/partitioned.py`` now runs it
on this machine), it measures the three things that decide whether it can pay off on more
machines than this one:

1. **The run itself, in one process,** traced: every fired timer's time, origin (the actor
   whose work set it, decision 68) and wall cost (from its firing to the next one: its whole
   causal chain), and every message that would cross between regions (relay trips over cut
   links, mail between users of different regions), for the regions ``nodes.run.regions``
   plans for each N.
2. **Conservative windows:** each window runs from the earliest pending event to that plus the
   lookahead (the least a crossing message takes), so an idle stretch costs one window. From
   the trace: how many windows, the events and crossing messages per window, and the critical
   path (the sum over windows of the busiest region's cost in that window: what N machines
   would take with perfect barriers).
3. **The barrier:** a local Ray instance with N region actors; the median wall time of one
   window's round (every actor given its inbox and returning its outbox), empty and with a
   window's worth of pickled relay messages.

The model: ``wall(N) = critical path + windows x round(N)``, against the one-process run.
Results: bench/results/lookahead.json and a table.

    python bench/lookahead.py [SCENARIO.yaml] [--partitions 2 4] [--rounds 2000] [--until 6h]
    (default: scenarios/city.yaml)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import pickle
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.common import commit, machine, table  # noqa: E402


def traced_run(data: dict[str, Any]) -> dict[str, Any]:
    """Run the scenario in this process, tracing fired timers and crossing candidates."""
    from nodes.network import trips
    from nodes.run.harness import run
    from nodes.run.scenario import parse_scenario
    from nodes.traffic import sae
    from simulator import clock as clock_module

    fired: list[tuple[float, str, float]] = []  # (time, origin, wall cost of its chain)
    sends: list[tuple[float, str, str]] = []  # (time sent, from KM, to KM)
    state: dict[str, Any] = {"last": None}

    original_step = clock_module.VirtualClock.step

    def step(self: Any) -> None:
        now = time.perf_counter()
        last = state["last"]
        if last is not None:
            fired[-1] = (last[0], last[1], now - last[2])
        original_step(self)
        fired.append((self._now_s, self._firing, 0.0))
        state["last"] = (self._now_s, self._firing, now)

    scenario = parse_scenario(data)
    km_of_lkm = {lkm.id: lkm.km for lkm in scenario.lkms}
    km_of_sae = {s.id: km_of_lkm[s.lkm] for s in scenario.saes}
    original_hop, original_notice = trips.Trips._hop, trips.Trips._notice
    original_post = sae.SimulatedSAE._post

    def hop(self: Any, here: str, beyond: str, trip: Any) -> None:
        sends.append((self.clock.now(), here, beyond))
        original_hop(self, here, beyond, trip)

    def notice(self: Any, route: Any, frm: int, to: int, trip: Any) -> None:
        sends.append((self.clock.now(), route[frm], route[to]))
        original_notice(self, route, frm, to, trip)

    def post(self: Any, to_sae: str, mail: Any) -> None:
        sends.append((self.clock.now(), km_of_sae[self.name], km_of_sae[to_sae]))
        original_post(self, to_sae, mail)

    clock_module.VirtualClock.step = step  # type: ignore[method-assign]
    trips.Trips._hop, trips.Trips._notice = hop, notice  # type: ignore[method-assign]
    sae.SimulatedSAE._post = post  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            outcome = asyncio.run(run(scenario, Path(out)))
            wall_s = time.perf_counter() - started
    finally:
        clock_module.VirtualClock.step = original_step  # type: ignore[method-assign]
        trips.Trips._hop, trips.Trips._notice = original_hop, original_notice  # type: ignore[method-assign]
        sae.SimulatedSAE._post = original_post  # type: ignore[method-assign]
    if not sends and data.get("links"):  # the patches must still match what they wrap
        raise SystemExit("the trace saw no relay message: Trips._hop/_notice or "
                         "SimulatedSAE._post changed under bench/lookahead.py")
    return {"fired": fired, "sends": sends, "wall_s": wall_s, "run_s": outcome.wall_s,
            "setup_s": outcome.setup_s, "steps": outcome.steps}


def owners(data: dict[str, Any]) -> dict[str, str]:
    """Actor name -> its KM (origins of other names are shared by every region)."""
    km_of_lkm = {lkm["id"]: lkm["km"] for lkm in data["lkms"]}
    names = {f"km:{km['id']}": km["id"] for km in data["kms"]}
    names.update({lkm: km for lkm, km in km_of_lkm.items()})
    names.update({s["id"]: km_of_lkm[s["lkm"]] for s in data.get("saes", [])})
    for link in data.get("links", []):  # a link's books are kept at its first end by name
        a, b = sorted((link["a"], link["b"]))
        names[f"link:{a}-{b}"] = names[f"link:{b}-{a}"] = a
    return names


def windows(trace: dict[str, Any], region_of_km: dict[str, int], n: int,
            lookahead_s: float, owner_km: dict[str, str]) -> dict[str, Any]:
    """Replay the trace through conservative windows (see the module docstring)."""
    fired = trace["fired"]
    times = [t for t, _, _ in fired]
    crossing = sorted(t for t, a, b in trace["sends"] if region_of_km[a] != region_of_km[b])
    count = critical = shared = 0.0
    busiest: Counter[int] = Counter()
    per_window_events: list[int] = []
    i = 0
    while i < len(fired):
        end = fired[i][0] + lookahead_s
        j = bisect.bisect_left(times, end, lo=i)
        cost = [0.0] * n
        for _, origin, wall in fired[i:j]:
            km = owner_km.get(origin)
            if km is None:  # the harness's own timers: every region does its share
                for r in range(n):
                    cost[r] += wall / n
                shared += wall
            else:
                cost[region_of_km[km]] += wall
        top = max(range(n), key=lambda r: cost[r])
        busiest[top] += 1
        critical += cost[top]
        per_window_events.append(j - i)
        count += 1
        i = j
    return {"windows": int(count), "critical_path_s": critical, "shared_s": shared,
            "crossing_messages": len(crossing),
            "events_per_window_median": statistics.median(per_window_events),
            "events_per_window_mean": statistics.fmean(per_window_events),
            "busiest_region_share": {str(r): c / count for r, c in sorted(busiest.items())}}


def barrier(n: int, rounds: int, messages: int) -> dict[str, float]:
    """Median wall time of one window's round on a local Ray instance with ``n`` region
    actors, each given an inbox of ``messages`` pickled relay messages and returning as many."""
    import ray

    from nodes.keynode import Key
    from nodes.network.trips import Carry, ShipJob

    keys = tuple(Key(f"qk_SAE_{i:05d}_{i:06d}", bytes(1024)) for i in range(40))
    job = ShipJob("SAE_00001", "LKM001", "LKM002", 40, 8192)
    message = Carry(1, ("KM01", "KM02", "KM03"), job, 40, 8192, 0.0, keys, 40, False, 1)
    size = len(pickle.dumps(message))

    @ray.remote(num_cpus=0)
    class Region:
        def window(self, inbox: list[Any]) -> list[Any]:
            return inbox

    actors = [Region.remote() for _ in range(n)]  # type: ignore[attr-defined]
    ray.get([a.window.remote([]) for a in actors])
    result = {}
    for label, count in (("empty", 0), ("loaded", messages)):
        inbox = [message] * count
        walls = []
        for _ in range(rounds):
            started = time.perf_counter()
            ray.get([a.window.remote(inbox) for a in actors])
            walls.append(time.perf_counter() - started)
        result[f"round_{label}_ms"] = statistics.median(walls) * 1e3
    result["message_bytes"] = size
    for a in actors:
        ray.kill(a)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="scenarios/city.yaml")
    parser.add_argument("--partitions", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--until", help="override the scenario's duration, e.g. 6h")
    parser.add_argument("--transport", default="direct", choices=("http", "direct"))
    args = parser.parse_args()
    import yaml

    from nodes.run.regions import plan_for
    from nodes.run.scenario import parse_scenario

    data = yaml.safe_load(Path(args.scenario).read_text())
    data["transport"] = args.transport
    if args.until:  # outages from then on are dropped
        from simulator import parse_duration

        data["duration"] = args.until
        end_s = parse_duration(args.until)
        data["outages"] = [o for o in data.get("outages", [])
                           if parse_duration(str(o["at"])) < end_s]
    scenario = parse_scenario(data)
    unbounded_mail = scenario.model_copy(update={"mail_delay_s": 3600.0})
    plans = {n: plan_for(unbounded_mail, n) for n in args.partitions}
    # mail between regions must take the lookahead at least: give it the smallest
    lookahead = min(plan.lookahead_s for plan in plans.values())
    if scenario.mail_delay_s < lookahead:
        data["mail_delay"] = f"{lookahead}s"
    trace = traced_run(data)
    owner_km = owners(data)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows, results = [], []
    try:
        for n, plan in plans.items():
            where = plan.region_of()
            model = windows(trace, where, n, plan.lookahead_s, owner_km)
            per_window = max(1, round(model["crossing_messages"] / max(model["windows"], 1)))
            cost = barrier(n, args.rounds, per_window)
            projected = model["critical_path_s"] + model["windows"] * cost["round_empty_ms"] / 1e3
            one = sum(wall for _, _, wall in trace["fired"])  # N = 1: every chain in turn
            result = {"partitions": n, "lookahead_ms": plan.lookahead_s * 1e3,
                      "cut_links": len(plan.cut), **model, **cost,
                      "one_process_chains_s": one, "projected_run_s": projected,
                      "speedup": one / projected}
            results.append(result)
            rows.append((str(n), f"{plan.lookahead_s * 1e3:.3f}", str(len(plan.cut)),
                         f"{model['windows']:,}", f"{model['events_per_window_mean']:.2f}",
                         f"{model['crossing_messages']:,}", f"{model['critical_path_s']:.1f}",
                         f"{cost['round_empty_ms']:.3f}", f"{cost['round_loaded_ms']:.3f}",
                         f"{one:.1f}", f"{projected:.1f}", f"{one / projected:.2f}"))
    finally:
        ray.shutdown()
    fired = trace["fired"]
    report = {"benchmark": "lookahead", "commit": commit(), "machine": machine(),
              "scenario": args.scenario, "duration": data["duration"],
              "transport": args.transport, "mail_delay": data.get("mail_delay", "0s"),
              "fired_timers": len(fired), "one_process": {k: trace[k] for k in
                                                           ("wall_s", "run_s", "setup_s")},
              "rounds": args.rounds, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lookahead.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.scenario} ({data['duration']}, {args.transport}): {len(fired):,} timers fired "
          f"in {trace['run_s'] - trace['setup_s']:.1f} s of simulation after "
          f"{trace['setup_s']:.1f} s of set-up")
    print(table(("N", "lookahead ms", "cut", "windows", "events/window", "crossing msgs",
                 "critical s", "round ms", "loaded round ms", "1 process s", "projected s",
                 "speed-up"), rows))
    print(f"(round: median of {args.rounds} on a local Ray instance; written to "
          f"{RESULTS / 'lookahead.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
