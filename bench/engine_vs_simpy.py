"""The engine's own figure of merit: events per second of `simulator/` against SimPy on the same
model, measured in one run (alternating, medians), and their ratio.

    .venv/bin/python bench/engine_vs_simpy.py [--actors 1000] [--events 100000] [--repeat 5]

Two models, each in both engines, with the same seeded exponential delays:
- messages: N actors pass tokens; an actor that receives one sets a timer of an exponential
  delay (mean 1 s) that sends it on to a random actor, and takes its next message (qkdsim: a
  `call_later` whose callback `tell`s the peer's mailbox; SimPy: a `Store` per actor, `get`,
  and a `timeout` whose callback `put`s into the peer's store);
- timers: N actors each wake after exponential delays and count (qkdsim: `call_later` chains;
  SimPy: a `timeout` loop).
An event is one delivered message (messages) or one wake-up (timers). Writes
bench/results/engine_vs_simpy.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import simpy  # noqa: E402

from bench.common import RESULTS, commit, machine, table  # noqa: E402
from simulator import Actor, ActorRef, Simulation  # noqa: E402


class Passer(Actor):
    def __init__(self, name: str, sim: Simulation, rng: random.Random, box: dict[str, Any]
                 ) -> None:
        super().__init__(name)
        self.sim, self.rng, self.box = sim, rng, box

    async def receive(self, message: object) -> None:
        self.box["events"] += 1
        peers: list[ActorRef[Any]] = self.box["peers"]
        peer = peers[self.rng.randrange(len(peers))]
        self.sim.clock.call_later(self.rng.expovariate(1.0), lambda: peer.tell(message))


async def qkdsim_messages(actors: int, until_s: float) -> int:
    sim = Simulation(1)
    rng = random.Random(1)
    box: dict[str, Any] = {"events": 0, "peers": []}
    box["peers"] = [await sim.spawn(Passer(f"a{i}", sim, rng, box)) for i in range(actors)]
    for ref in box["peers"]:
        ref.tell("token")
    await sim.run(until_s)
    await sim.shutdown()
    return int(box["events"])


async def qkdsim_timers(actors: int, until_s: float) -> int:
    sim = Simulation(1)
    rng = random.Random(1)
    count = [0]

    def wake() -> None:
        count[0] += 1
        sim.clock.call_later(rng.expovariate(1.0), wake)

    for _ in range(actors):
        sim.clock.call_later(rng.expovariate(1.0), wake)
    await sim.run(until_s)
    return count[0]


def simpy_messages(actors: int, until_s: float) -> int:
    env = simpy.Environment()
    rng = random.Random(1)
    stores = [simpy.Store(env) for _ in range(actors)]
    count = [0]

    def actor(store: simpy.Store) -> Any:
        while True:
            token = yield store.get()
            count[0] += 1
            peer = stores[rng.randrange(actors)]
            # like the qkdsim actor: a timer sends the token on, the actor takes the next one
            timer = env.timeout(rng.expovariate(1.0))
            timer.callbacks.append(lambda _event, p=peer, t=token: p.put(t))

    for store in stores:
        env.process(actor(store))
        store.put("token")
    env.run(until=until_s)
    return count[0]


def simpy_timers(actors: int, until_s: float) -> int:
    env = simpy.Environment()
    rng = random.Random(1)
    count = [0]

    def actor() -> Any:
        while True:
            yield env.timeout(rng.expovariate(1.0))
            count[0] += 1

    for _ in range(actors):
        env.process(actor())
    env.run(until=until_s)
    return count[0]


def timed(fn: Any, *args: Any) -> tuple[float, int]:
    began = time.perf_counter()
    result = asyncio.run(fn(*args)) if asyncio.iscoroutinefunction(fn) else fn(*args)
    return time.perf_counter() - began, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    until_s = args.events / args.actors  # each actor makes about one event a second
    ways = {("messages", "qkdsim"): qkdsim_messages, ("messages", "simpy"): simpy_messages,
            ("timers", "qkdsim"): qkdsim_timers, ("timers", "simpy"): simpy_timers}
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in ways}
    for attempt in range(args.repeat):
        for key, fn in ways.items():
            wall, events = timed(fn, args.actors, until_s)
            rates[key].append(events / wall)
            print(f"{key[0]} {key[1]} {attempt + 1}/{args.repeat}: {events} events in "
                  f"{wall:.2f} s", file=sys.stderr)
    median = {key: statistics.median(values) for key, values in rates.items()}
    rows = []
    for model in ("messages", "timers"):
        ours, theirs = median[(model, "qkdsim")], median[(model, "simpy")]
        rows.append([model, f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}",
                     "met" if ours / theirs >= 0.5 else "MISSED"])
    print(table(["model", "qkdsim events/s", "SimPy events/s", "ratio", ">= 0.5"], rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_vs_simpy.json").write_text(json.dumps({
        "benchmark": "engine_vs_simpy", "commit": commit(), "machine": machine(),
        "actors": args.actors, "events": args.events, "repeat": args.repeat,
        "simpy": simpy.__version__,
        "events_per_s": {f"{m}/{e}": v for (m, e), v in rates.items()},
        "median_events_per_s": {f"{m}/{e}": v for (m, e), v in median.items()},
        "ratio": {m: median[(m, "qkdsim")] / median[(m, "simpy")]
                  for m in ("messages", "timers")}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
