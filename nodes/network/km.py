"""Key managers: key generation for home pools, and trusted-node relay for remote slices.

:class:`KeyManager` is an actor holding what one KM owns: its generation budget (key material
accrues at ``key_rate_bps``, up to an hour's worth) and whether it is up.
:class:`KMNetwork` is the :class:`~nodes.keynode.supply.KeySupply` every LKM is given: it holds only
references (no state of its own) and runs in the asking LKM's background task, so no actor ever
waits on another actor that could be waiting on it.

A slice sync, for receiver Bob homed at LKM_B (KM3), asked by LKM_A (KM1):
1. KM1 and KM3 must be up; 2. LKM_B ships up to n keys from Bob's home pool (they stay there,
state shipped); 3. the bits are relayed KM3 -> ... -> KM1 over a fewest-hop path of links that
are up, each hop spending the bits from its link buffer (one-time pad); a hop that cannot pay is
avoided and the path recomputed; 4. if no path can carry them, the shipped keys go back to Bob's
pool and every spent hop is refunded, so nothing is half-spent or half-delivered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import networkx as nx

from nodes.keynode.directory import Directory
from nodes.keynode.errors import KMUnreachable
from nodes.keynode.keystore import Key
from nodes.keynode.messages import ShipSlice, UnshipSlice
from nodes.network.link import GetLatency, Refund, Spend
from nodes.network.routing import Edge, hops, shortest_path
from simulator import Actor, ActorRef, ActorStopped
from simulator import Clock

BUDGET_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Generate:
    """``count`` keys of ``key_bytes``; ``provision`` (a pool's first fill) is not rate-limited."""

    count: int
    key_bytes: int
    provision: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered while the KM is up; raises KMUnreachable while it is down."""


@dataclass(frozen=True, slots=True)
class SetDown:
    down: bool


class KeyManager(Actor):
    expected_errors = (KMUnreachable,)

    def __init__(self, km_id: str, key_rate_bps: float, clock: Clock, rng: random.Random,
                 record: Callable[..., None]) -> None:
        super().__init__(f"km:{km_id}")
        self.km_id = km_id
        self.key_rate_bps = key_rate_bps
        self.capacity_bits = key_rate_bps * BUDGET_WINDOW_S
        self.budget_bits = self.capacity_bits
        self.clock = clock
        self.rng = rng
        self.record = record
        self.down = False
        self._settled_s = clock.now()

    async def receive(self, message: object) -> Any:
        if isinstance(message, SetDown):
            self.down = message.down
            return None
        if self.down:
            raise KMUnreachable(f"{self.km_id} is down")
        if isinstance(message, Ping):
            return True
        if isinstance(message, Generate):
            return self._generate(message)
        raise TypeError(f"unexpected message {type(message).__name__}")

    def _generate(self, msg: Generate) -> list[bytes]:
        now = self.clock.now()
        self.budget_bits = min(self.capacity_bits,
                               self.budget_bits + (now - self._settled_s) * self.key_rate_bps)
        self._settled_s = now
        count = msg.count
        if not msg.provision:
            count = min(count, int(self.budget_bits // (msg.key_bytes * 8)))
            self.budget_bits -= count * msg.key_bytes * 8
        if count:
            self.record("generate", self.km_id, keys=count, provision=msg.provision)
        return [self.rng.randbytes(msg.key_bytes) for _ in range(count)]


class KMNetwork:
    """The KeySupply of every LKM in a simulated network (see the module docstring)."""

    def __init__(self, directory: Directory, graph: nx.Graph, kms: Mapping[str, ActorRef[Any]],
                 links: Mapping[Edge, ActorRef[Any]], lkms: Mapping[str, ActorRef[Any]],
                 record: Callable[..., None], clock: Clock) -> None:
        self.directory = directory
        self.clock = clock
        self.graph = graph
        self.kms = kms
        self.links = links
        self.lkms = lkms
        self.record = record
        self._paths: dict[tuple[str, str, frozenset[Edge], frozenset[str]], list[str] | None] = {}

    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int,
                    provision: bool = False) -> list[bytes]:
        km = self.kms[self.directory.km_of(lkm_id)]
        result: list[bytes] = await km.ask(Generate(count, key_bytes, provision))
        return result

    async def fetch_slice(self, lkm_id: str, owner: str, home_lkm: str, count: int) -> list[Key]:
        src, dst = self.directory.km_of(home_lkm), self.directory.km_of(lkm_id)
        for km in {src, dst}:
            await self.kms[km].ask(Ping())
        keys: list[Key] = await self._ask_lkm(home_lkm, ShipSlice(owner, lkm_id, count))
        if not keys:
            return []
        bits = sum(len(k.material) * 8 for k in keys)
        path = await self.relay(src, dst, bits)
        if path is None:
            await self._ask_lkm(home_lkm, UnshipSlice(owner, tuple(k.key_id for k in keys)))
            self.record("relay_failure", src, to=dst, bits=bits, keys=len(keys))
            raise KMUnreachable(f"no path from {src} to {dst} can carry {bits} bits")
        self.record("relay", src, to=dst, bits=bits, keys=len(keys), hops=len(path) - 1,
                    path="-".join(path))
        return keys

    async def _ask_lkm(self, lkm_id: str, message: object) -> Any:
        """An LKM that is down (crashed) is as unreachable as a KM that is down."""
        ref = self.lkms.get(lkm_id)
        if ref is None:
            raise KMUnreachable(f"{lkm_id} is down")
        try:
            return await ref.ask(message)
        except ActorStopped:
            raise KMUnreachable(f"{lkm_id} went down") from None

    async def relay(self, src: str, dst: str, bits: int) -> list[str] | None:
        """Spend ``bits`` on every hop of a fewest-hop usable path; None (nothing spent) if no
        path can carry them."""
        bad_edges: set[Edge] = set()
        bad_nodes: set[str] = set()
        while (path := self._path(src, dst, bad_edges, bad_nodes)) is not None:
            down = await self._down_relays(path)
            if down:
                bad_nodes |= down
                continue
            failed = await self._spend_path(path, bits)
            if failed is None:
                await self._cross(path)
                return path
            bad_edges.add(failed)
        return None

    def _path(self, src: str, dst: str, bad_edges: set[Edge],
              bad_nodes: set[str]) -> list[str] | None:
        """:func:`shortest_path`, remembered: the graph never changes (what is down is learnt
        per relay, as ``bad_*``), and a city asks the same few questions thousands of times."""
        key = (src, dst, frozenset(bad_edges), frozenset(bad_nodes))
        if key not in self._paths:
            self._paths[key] = shortest_path(self.graph, src, dst, bad_edges, bad_nodes)
        path = self._paths[key]
        return None if path is None else list(path)

    async def _cross(self, path: list[str]) -> None:
        """The relay takes as long as the added latency of the links it crossed."""
        delay_s = 0.0
        for edge in hops(path):
            delay_s += await self.links[edge].ask(GetLatency())
        if delay_s > 0:
            await self.clock.sleep(delay_s)

    async def _down_relays(self, path: list[str]) -> set[str]:
        down = set()
        for km in path[1:-1]:
            try:
                await self.kms[km].ask(Ping())
            except KMUnreachable:
                down.add(km)
        return down

    async def _spend_path(self, path: list[str], bits: int) -> Edge | None:
        """Spend on each hop in turn; on a refusal refund the hops already spent and return it."""
        spent: list[Edge] = []
        for edge in hops(path):
            if not await self.links[edge].ask(Spend(bits)):
                for done in spent:
                    await self.links[done].ask(Refund(bits))
                return edge
            spent.append(edge)
        return None
