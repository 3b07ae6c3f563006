"""The per-flow random streams: SplitMix64 as published, exponential gaps that are exponential,
streams fixed by their names, and a few dozen bytes each."""

from __future__ import annotations

import math
import random
import tracemalloc
from typing import Any, Callable

from simulator import Simulation, Stream

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
