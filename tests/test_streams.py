"""The per-flow random streams: SplitMix64 as published, exponential gaps that are exponential,
streams fixed by their names, a few dozen bytes each, and scenario runs that still repeat."""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import yaml

from nodes.run.harness import run
from nodes.run.scenario import parse_scenario
from simulator import Simulation, Stream

ROOT = Path(__file__).resolve().parent.parent
M64 = (1 << 64) - 1


def reference_splitmix64(seed: int, count: int) -> list[int]:
    """Vigna's splitmix64.c, written out again: x += 0x9e37...; z = x; z = (z ^ (z >> 30)) *
    0xbf58...; z = (z ^ (z >> 27)) * 0x94d0...; return z ^ (z >> 31) (all modulo 2**64)."""
    x, out = seed, []
    for _ in range(count):
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_the_stream_is_splitmix64_as_published() -> None:
    assert Stream(0).next64() == 0xE220A8397B1DCDAF  # splitmix64 seeded with 0, first output
    stream = Stream(1234567)
    assert [stream.next64() for _ in range(8)] == reference_splitmix64(1234567, 8)
    last = Stream(M64)  # the state wraps at 2**64
    assert [last.next64() for _ in range(3)] == reference_splitmix64(M64, 3)


def test_random_takes_the_top_53_bits_and_stays_below_one() -> None:
    stream, outputs = Stream(99), reference_splitmix64(99, 1000)
    draws = [stream.random() for _ in range(1000)]
    assert draws == [(z >> 11) / 2**53 for z in outputs]
    assert all(0.0 <= d < 1.0 for d in draws)
    top = Stream(0)
    top.state = (M64 - 0x9E3779B97F4A7C15)  # whatever the next output, the draw is below 1
    assert 0.0 <= top.random() < 1.0


def test_exponential_gaps_have_the_right_mean_and_distribution() -> None:
    rate, n = 13 / 3600.0, 200_000
    stream = Stream.named(42, "flow:SAE_ALICE_001:0:SAE_BOB_001")
    gaps = sorted(stream.expovariate(rate) for _ in range(n))
    mean = math.fsum(gaps) / n
    assert abs(mean * rate - 1.0) < 0.01
    # Kolmogorov-Smirnov distance to F(x) = 1 - exp(-rate x)
    distance = max(max(cdf - i / n, (i + 1) / n - cdf)
                   for i, cdf in enumerate(-math.expm1(-rate * x) for x in gaps))
    assert distance < 0.005
    assert gaps[0] >= 0.0


def test_a_stream_is_fixed_by_the_seed_and_its_name() -> None:
    def draws(seed: int, name: str) -> list[int]:
        stream = Stream.named(seed, name)
        return [stream.next64() for _ in range(5)]

    assert draws(1, "flow:A:0:B") == draws(1, "flow:A:0:B")
    assert draws(1, "flow:A:0:B") != draws(1, "flow:A:1:B")
    assert draws(1, "flow:A:0:B") != draws(2, "flow:A:0:B")
    sim = Simulation(seed=1)
    assert sim.derived_stream("flow:A:0:B").state == Stream.named(1, "flow:A:0:B").state
    # BLAKE2b of "1:flow:A:0:B", not hash(): the same start in every process
    assert Stream.named(1, "flow:A:0:B").state == 0x0E8514EA73D18684


def bytes_each(make: Callable[[int], Any], n: int = 2000) -> float:
    tracemalloc.start()
    try:
        made = [make(i) for i in range(n)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(made) == n
    return held / n


def test_a_stream_costs_tens_of_bytes_where_a_random_costs_kilobytes() -> None:
    stream = bytes_each(lambda i: Stream.named(1, f"flow:SAE_{i}:0:SAE_B"))
    mersenne = bytes_each(lambda i: random.Random(f"1:sae:SAE_{i}"))
    assert stream < 200 < 2000 < mersenne


def scenario_data(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    data.update(changes)
    return data


async def test_quickstart_holds_and_repeats_byte_for_byte_and_moves_with_the_seed(
        tmp_path: Path) -> None:
    outcomes = {}
    for name, seed in (("one", 42), ("two", 42), ("other", 43)):
        outcomes[name] = await run(parse_scenario(scenario_data(seed=seed)), tmp_path / name)
        assert outcomes[name].exit_code == 0, name  # every expectation held
    for file in ("events.jsonl", "metrics.csv"):
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes()
        assert (tmp_path / "one" / file).read_bytes() != (tmp_path / "other" / file).read_bytes()
    assert outcomes["one"].summary["audit"]["mails_sent"] > 4000  # 26 mails/h for a week


def delivery_times(folder: Path, master: str, slave: str) -> list[float]:
    rows = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return [row["t_s"] for row in rows if row["kind"] == "delivery"
            and row["data"]["master"] == master and row["data"]["slave"] == slave]


async def test_a_new_flow_leaves_the_other_flows_mails_where_they_were(tmp_path: Path) -> None:
    """Each flow draws from its own stream: giving Alice a second correspondent moves none of
    her mails to Bob (with one RNG per user, the two flows' draws interleaved)."""
    carol = {"id": "SAE_CAROL_001", "email": "carol@example.com", "lkm": "LKM_A"}
    base = scenario_data(duration="1d", outages=[], expect=["no_key_reuse"])
    more = scenario_data(
        duration="1d", outages=[], expect=["no_key_reuse"], saes=[*base["saes"], carol],
        traffic=[*base["traffic"], {"from": "SAE_ALICE_001", "to": "SAE_CAROL_001",
                                    "mails_per_hour": 13, "mail_bytes": 3000}])
    await run(parse_scenario(base), tmp_path / "base")
    await run(parse_scenario(more), tmp_path / "more")
    for master, slave in (("SAE_ALICE_001", "SAE_BOB_001"), ("SAE_BOB_001", "SAE_ALICE_001")):
        times = delivery_times(tmp_path / "base", master, slave)
        assert len(times) > 200
        assert delivery_times(tmp_path / "more", master, slave) == times
    assert len(delivery_times(tmp_path / "more", "SAE_ALICE_001", "SAE_CAROL_001")) > 200
