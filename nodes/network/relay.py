"""Trusted-node relay: the KeySupply every LKM of a simulated network is given.

:class:`KMNetwork` holds only references (no state of its own) and runs in the asking LKM's
sync worker, so no actor ever waits on another actor that could be waiting on it.

A slice sync, for receiver Bob homed at LKM_B (KM3), asked by LKM_A (KM1):

1. KM1 and KM3 must be up;
2. LKM_B ships up to n keys from Bob's home pool (they stay there, state shipped);
3. the keys are relayed KM3 -> ... -> KM1 over a fewest-hop path of links that are up: as many
   whole keys as every hop's buffer holds (a partial top-up is recorded, ``relay`` with
   ``partial``), each hop spending their bits (one-time pad) plus its authentication cost; a
   hop that can carry none is avoided and the path recomputed; the relay then takes as long as
   the added latency of its links; the keys that were not carried go back to Bob's pool;
4. if no path can carry a key, the shipped keys go back to Bob's pool and every spent hop is
   refunded, so nothing is half-spent or half-delivered; the sync's outcome is ``no_key`` when
   links were up but short of key, ``unreachable`` when none was up.

The same holds when the relay is interrupted (the asking LKM crashes, so its worker is
cancelled): whatever was shipped goes back and whatever was spent is refunded before the
cancellation goes on. An LKM that cannot take relayed keys gives them back the same way
(:meth:`KMNetwork.return_slice`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping, NoReturn

import networkx as nx

from nodes.keynode import (
    ConsumeCopies,
    Directory,
    Key,
    KMUnreachable,
    NoLinkKey,
    Shipment,
    ShipSlice,
    UnshipSlice,
)
from nodes.network.km import Forward, Generate, Ping
from nodes.network.link import Available, Refund, Spend
from nodes.network.routing import Edge, hops, key_aware_path, shortest_path, widest_path
from simulator import ActorRef, ActorStopped, Clock

HOP_PROCESSING_S = 0.001  # a KM's forwarding per hop: OTP decrypt/re-encrypt and authentication
RELAY_BOUND_S = 86400.0  # a relay message not arrived within a day is lost (AskTimeout)


class KMNetwork:
    """The KeySupply of every LKM in a simulated network (see the module docstring)."""

    def __init__(self, directory: Directory, graph: nx.Graph, kms: Mapping[str, ActorRef[Any]],
                 links: Mapping[Edge, ActorRef[Any]], lkms: Mapping[str, ActorRef[Any]],
                 record: Callable[..., None], clock: Clock,
                 key_bits: Mapping[str, int] | None = None,
                 hop_processing_s: float = HOP_PROCESSING_S,
                 routing: str = "fewest_hops") -> None:
        self.directory = directory
        self.routing = routing
        self.hop_processing_s = hop_processing_s
        self.key_bits = key_bits or {}  # LKM -> the size of its keys, when known
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

    async def fetch_slice(self, lkm_id: str, owner: str, home_lkm: str, count: int) -> Shipment:
        src, dst = self.directory.km_of(home_lkm), self.directory.km_of(lkm_id)
        for km in dict.fromkeys((src, dst)):  # both ends, the home side first
            await self.kms[km].ask(Ping())
        asked, limited, found = count, False, None
        if home_lkm in self.key_bits:  # ship only what a path can carry now
            path, fits, cause = await self._find(src, dst, self.key_bits[home_lkm], set(), set(),
                                                 count)
            if path is None:
                self._cannot_relay(src, dst, self.key_bits[home_lkm], count, cause)
            limited, count, found = fits < count, min(count, fits), (path, fits)
        keys: list[Key] = await self._ask_lkm(home_lkm, ShipSlice(owner, lkm_id, count))
        shipment = Shipment(owner, home_lkm, lkm_id, tuple(keys))
        if not keys:  # the home pool is at its own threshold (or empty): it keeps the rest
            self.record("relay_failure", src, to=dst, keys=count, cause="home_reserve")
            return shipment
        key_bits = len(keys[0].material) * 8
        try:
            sent_s = self.clock.now()
            if len(keys) < count:  # the probe chose for a larger demand: choose again
                found = None
            path, carried, cause = await self.relay(src, dst, key_bits, len(keys), found)
        except BaseException:  # interrupted before any hop was left spent: the keys go home
            await self._unship(shipment)
            raise
        if path is None:
            await self._unship(shipment)
            self._cannot_relay(src, dst, key_bits, len(keys), cause)
        sent = Shipment(owner, home_lkm, lkm_id, tuple(keys[:carried]), tuple(path),
                        carried * key_bits)
        if carried < len(keys):  # what the path could not carry goes home now
            await self._unship(Shipment(owner, home_lkm, lkm_id, tuple(keys[carried:])))
        held = ("links" if limited or carried < len(keys) else
                "home_reserve" if len(keys) < count else None)
        partial = {"requested": asked, "partial": True, "held_by": held} if held else {}
        trusted = {"trusted": "-".join(path[1:-1])} if len(path) > 2 else {}
        self.record("relay", src, to=dst, bits=sent.bits, keys=carried, hops=len(path) - 1,
                    path="-".join(path), sites=f"{home_lkm}>{lkm_id}",
                    delay_s=round(self.clock.now() - sent_s, 9), **trusted, **partial)
        return sent

    async def return_slice(self, shipment: Shipment) -> None:
        """Refund every hop the shipment spent and give its keys back to their home pool."""
        if not shipment.keys:
            return
        await self._refund(hops(list(shipment.route)), shipment.bits)
        await self._unship(shipment)

    async def consume_copies(self, lkm_id: str, to_lkm: str, key_ids: tuple[str, ...]) -> int:
        """A classical notice from one LKM to another (no key is relayed, so none is spent): it
        gets through while both ends' KMs are up and a path of up links joins them."""
        src, dst = self.directory.km_of(lkm_id), self.directory.km_of(to_lkm)
        for km in dict.fromkeys((src, dst)):
            await self.kms[km].ask(Ping())
        down = {edge for edge, bits in (await self._available()).items() if bits is None}
        if src != dst and self._path(src, dst, down, set()) is None:
            raise KMUnreachable(f"no path of up links from {src} to {dst}")
        erased: int = await self._ask_lkm(to_lkm, ConsumeCopies(key_ids))
        return erased

    async def relay(self, src: str, dst: str, key_bits: int, count: int,
                    found: tuple[list[str], int] | None = None
                    ) -> tuple[list[str] | None, int, str]:
        """Relay as many whole keys of ``key_bits`` (up to ``count``) as a usable path of the
        routing policy can carry: spend them on every hop, then cross it. The path, the keys
        carried and "ok"; or None, 0 and why not ("no_path": links or KMs down, "no_key": the
        links that are up hold too little key), with nothing spent. ``found`` (a path and the
        keys it could carry, just probed) is tried first. Interrupted, it refunds what it
        spent."""
        bad_edges: set[Edge] = set()
        bad_nodes: set[str] = set()
        while True:
            path: list[str] | None
            if found is not None:
                (path, fits), cause, found = found, "ok", None
            else:
                path, fits, cause = await self._find(src, dst, key_bits, bad_edges, bad_nodes,
                                                     count)
            if path is None:
                return None, 0, cause
            carried = min(count, fits)
            bits = carried * key_bits
            failed = await self._spend_path(path, bits)
            if failed is None:
                try:
                    await self._cross(path)
                except BaseException:
                    await self._refund(hops(path), bits)
                    raise
                return path, carried, "ok"
            bad_edges.add(failed)

    async def _find(self, src: str, dst: str, key_bits: int, bad_edges: set[Edge],
                    bad_nodes: set[str], count: int = 1) -> tuple[list[str] | None, int, str]:
        """The first path of the routing policy whose KMs are up and whose every hop can carry
        a key now (learning what is down or short into ``bad_*``), with how many keys it can
        carry; or None, 0 and why not."""
        cause = "no_path"
        while True:
            path, known = await self._route(src, dst, key_bits, count, bad_edges, bad_nodes)
            if path is None:
                break
            down = await self._down_relays(path)
            if down:
                bad_nodes |= down
                continue
            fits, narrowest, why = await self._fits(path, key_bits, known)
            if fits > 0:
                return path, fits, "ok"
            bad_edges.add(narrowest)
            cause = "no_key" if why == "no_key" else cause
        if self.routing != "fewest_hops" and cause == "no_path":
            cause = await self._why_not(src, dst, bad_nodes)
        return None, 0, cause

    async def _route(self, src: str, dst: str, key_bits: int, count: int,
                     bad_edges: set[Edge], bad_nodes: set[str]
                     ) -> tuple[list[str] | None, dict[Edge, int] | None]:
        """The next path to try: fewest hops (remembered: the graph never changes), or, for
        ``widest`` and ``key_aware``, computed afresh from what every link holds now (returned
        too, so the path's hops need not be asked again)."""
        if self.routing == "fewest_hops":
            return self._path(src, dst, bad_edges, bad_nodes), None
        available = {edge: bits for edge, bits in (await self._available()).items()
                     if bits is not None}
        if self.routing == "widest":
            path = widest_path(self.graph, src, dst, available, key_bits, bad_edges, bad_nodes)
        else:
            path = key_aware_path(self.graph, src, dst, available, key_bits, count * key_bits,
                                  bad_edges, bad_nodes)
        return path, available

    async def _available(self) -> dict[Edge, int | None]:
        return {edge: await ref.ask(Available()) for edge, ref in sorted(self.links.items())}

    async def _why_not(self, src: str, dst: str, bad_nodes: set[str]) -> str:
        """No usable path under a key-seeing policy: "no_key" if links that are up connect the
        two KMs (they are only short of key), else "no_path"."""
        up = {edge for edge, bits in (await self._available()).items() if bits is not None}
        down = [edge for edge in self.links if edge not in up]
        return "no_key" if shortest_path(self.graph, src, dst, down, bad_nodes) else "no_path"

    def _cannot_relay(self, src: str, dst: str, key_bits: int, keys: int, cause: str) -> NoReturn:
        self.record("relay_failure", src, to=dst, bits=key_bits * keys, keys=keys, cause=cause)
        if cause == "no_key":
            raise NoLinkKey(f"no path from {src} to {dst} holds {key_bits} bits of link key")
        raise KMUnreachable(f"no path from {src} to {dst}")

    async def _fits(self, path: list[str], key_bits: int,
                    known: Mapping[Edge, int] | None = None) -> tuple[int, Edge, str]:
        """How many whole keys every hop of ``path`` can carry now (from ``known``, what the
        links were just read to hold, or asked); the narrowest hop, and whether it is down
        ("no_path") or short of key ("no_key")."""
        narrowest: tuple[int, Edge, str] | None = None
        for edge in hops(path):
            available: int | None = (known.get(edge) if known is not None
                                     else await self.links[edge].ask(Available()))
            here = (0, edge, "no_path") if available is None else \
                (available // key_bits, edge, "no_key")
            if narrowest is None or here[0] < narrowest[0]:
                narrowest = here
        assert narrowest is not None, "a relay path has at least one hop"
        return narrowest

    async def _ask_lkm(self, lkm_id: str, message: object) -> Any:
        """An LKM that is down (crashed) is as unreachable as a KM that is down."""
        ref = self.lkms.get(lkm_id)
        if ref is None:
            raise KMUnreachable(f"{lkm_id} is down")
        try:
            return await ref.ask(message)
        except ActorStopped:
            raise KMUnreachable(f"{lkm_id} went down") from None

    async def _unship(self, shipment: Shipment) -> None:
        """Give shipped keys back to their home pool; if the home LKM is down meanwhile they
        stay shipped there, and the run records how many (``relay_failure``, ``stranded``)."""
        ids = tuple(key.key_id for key in shipment.keys)
        try:
            await _shielded(self._ask_lkm(shipment.home_lkm, UnshipSlice(shipment.owner, ids)))
        except KMUnreachable:
            self.record("relay_failure", self.directory.km_of(shipment.home_lkm),
                        to=self.directory.km_of(shipment.to_lkm), keys=len(ids), stranded=len(ids))

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
        """The relay message goes KM to KM (:class:`~nodes.network.km.Forward`), each hop taking
        its link's propagation and added latency plus the KM's processing
        (``hop_processing_s``): the slice arrives after the path's latency, and its pool may run
        dry meanwhile. A KM that went down on the way fails it (KMUnreachable)."""
        legs = tuple((self.links[edge], self.kms[beyond])
                     for edge, beyond in zip(hops(path), path[1:]))
        # waiting in clock time (with a bound far beyond any path's latency) lets the clock
        # move on to the hops' deliveries meanwhile
        await self.kms[path[0]].ask(Forward(legs, self.hop_processing_s), RELAY_BOUND_S)

    async def _down_relays(self, path: list[str]) -> set[str]:
        down = set()
        for km in path[1:-1]:
            try:
                await self.kms[km].ask(Ping())
            except KMUnreachable:
                down.add(km)
        return down

    async def _spend_path(self, path: list[str], bits: int) -> Edge | None:
        """Spend on each hop in turn; on a refusal (or an interruption) refund the hops already
        spent; the refusing hop, or None when every hop paid."""
        spent: list[Edge] = []
        try:
            for edge in hops(path):
                if not await self.links[edge].ask(Spend(bits)):
                    await self._refund(spent, bits)
                    return edge
                spent.append(edge)
        except BaseException:
            await self._refund(spent, bits)
            raise
        return None

    async def _refund(self, edges: list[Edge], bits: int) -> None:
        for edge in edges:
            await _shielded(self.links[edge].ask(Refund(bits)))


async def _shielded(waiting: Any) -> Any:
    """Await clean-up to its end even in a task being cancelled (asks are answered by actors
    that are still running; the cancellation goes on afterwards)."""
    future = asyncio.ensure_future(waiting)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        return await future
