"""Small named random streams: SplitMix64, for draws that need one int of state, not 2.5 KiB.

A :class:`Stream` is Steele, Lea and Flood's SplitMix64 ("Fast splittable pseudorandom number
generators", OOPSLA 2014), with the 64-bit finaliser of Vigna's reference ``splitmix64.c``: the
state moves by the golden-ratio increment on every draw and the output is that state mixed. Its
whole state is one Python int, so a simulation can give every traffic flow a stream of its own
where a ``random.Random`` (a Mersenne Twister, 624 words) would cost about 2.5 KiB each.

A stream is named, never numbered: :func:`stream_seed` hashes ``"{seed}:{name}"`` with BLAKE2b,
which is the same in every process (Python's ``hash()`` of a str is not).
"""

from __future__ import annotations

import hashlib
import math

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
UNIT = 2.0 ** -53


def stream_seed(seed: int, name: str) -> int:
    """The 64-bit start of the stream called ``name`` in a run seeded with ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Stream:
    """SplitMix64: ``next64`` is the reference generator's output; ``random`` and
    ``expovariate`` draw as ``random.Random``'s methods of those names do."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state & MASK64

    @classmethod
    def named(cls, seed: int, name: str) -> Stream:
        return cls(stream_seed(seed, name))

    def next64(self) -> int:
        self.state = z = (self.state + GOLDEN_GAMMA) & MASK64
        z = ((z ^ (z >> 30)) * MIX1) & MASK64
        z = ((z ^ (z >> 27)) * MIX2) & MASK64
        return z ^ (z >> 31)

    def random(self) -> float:
        """A float in [0, 1) from the top 53 bits of the next output."""
        return (self.next64() >> 11) * UNIT

    def expovariate(self, rate: float) -> float:
        """An exponential gap with mean ``1 / rate`` (CPython's formula)."""
        return -math.log(1.0 - self.random()) / rate
