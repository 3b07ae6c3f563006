"""Trusted-node relay: the KeySupply every LKM of a simulated network is given.

:class:`KMNetwork` holds only references and runs in the asking LKM's sync worker, so no actor
ever waits on another actor that could be waiting on it. What crosses between KMs is a
message that walks the path hop by hop and acts only at the KM it has reached
(:mod:`nodes.network.trips`, decision 66).

A slice sync, for receiver Bob homed at LKM_B (KM3), asked by LKM_A (KM1):

1. a path KM3 -> ... -> KM1 is chosen by the routing policy (fewest hops, or for ``widest``
   and ``key_aware`` from what every link held at the link-state round before last: see
   :meth:`KMNetwork.publish_link_state`), avoiding what earlier tries learnt;
2. the ask walks KM1 -> ... -> KM3: each KM must be up, each hop must hold at least one whole
   key (read at the link's master end); at KM3, LKM_B ships ``min(n, what every hop held)``
   keys of Bob's home pool (they stay there, state shipped);
3. the keys walk back KM3 -> ... -> KM1, each hop spending their bits plus its authentication
   at its master end; a hop that holds fewer keys carries fewer (the rest go home; a partial
   top-up is recorded, ``relay`` with ``partial``); the slice arrives after the path's latency
   both ways;
4. a hop that can carry none, or a KM that is down, ends the try there: the keys go home, the
   answer names the link or KM, and the next path is tried without it. The sync's outcome is
   ``no_key`` when links were up but short of key, ``unreachable`` when none was up (or an
   end KM or the home LKM was down). Key spent on hops already crossed stays spent.

An asking LKM that crashes meanwhile cancels its worker; the keys reach KM1 and go home from
there. An LKM that cannot take relayed keys sends them home the same way
(:meth:`KMNetwork.return_slice`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NoReturn

import networkx as nx

from nodes.keynode import Directory, KMUnreachable, NoLinkKey, Shipment
from nodes.network.km import Generate
from nodes.network.link import Available
from nodes.network.routing import Edge, key_aware_path, shortest_path, widest_path
from nodes.network.trips import Arrive, Ask, BitsJob, CopiesJob, Job, Outcome, ShipJob, Trips
from simulator import ActorRef, Clock, Promise

HOP_PROCESSING_S = 0.001  # a KM's forwarding per hop: OTP decrypt/re-encrypt and authentication
RELAY_BOUND_S = 86400.0  # a trip not answered within a day is lost (AskTimeout)


class KMNetwork:
    """The KeySupply of every LKM in a simulated network (see the module docstring)."""

    def __init__(self, directory: Directory, graph: nx.Graph, kms: Mapping[str, ActorRef[Any]],
                 links: Mapping[Edge, ActorRef[Any]], lkms: Mapping[str, ActorRef[Any]],
                 record: Callable[..., None], clock: Clock,
                 key_bits: Mapping[str, int] | None = None,
                 hop_processing_s: float = HOP_PROCESSING_S,
                 routing: str = "fewest_hops",
                 lengths_km: Mapping[Edge, float] | None = None) -> None:
        self.directory = directory
        self.routing = routing
        self.key_bits = key_bits or {}  # LKM -> the size of its keys, when known
        self.clock = clock
        self.graph = graph
        self.kms = kms
        self.links = links
        self.lkms = lkms
        self.record = record
        self.trips = Trips(directory, kms, links, lkms, record, clock, hop_processing_s,
                           lengths_km or {})
        self.set_latency = self.trips.set_latency
        self._paths: dict[tuple[str, str, frozenset[Edge], frozenset[str]], list[str] | None] = {}
        self._readings: dict[int, dict[Edge, int | None]] = {}  # round -> link -> bits held
        self._rounds = 0  # link-state rounds read so far
        #: a region of a partitioned run hands its readings out (take_readings); else none kept
        self.sharing = False
        self._shared: list[tuple[int, dict[Edge, int | None]]] = []  # read, not yet handed out
        self._published: dict[Edge, int | None] | None = None  # what key-seeing routes see

    async def publish_link_state(self) -> None:
        """One link-state round (decision 69): the links held here are read now, and key-seeing
        policies route from here on on the previous round's reading of every link (the first
        round's until there is a second), as on reports a controller has collected. In a
        partitioned run each region reads its own links, and the engine hands each region's
        reading to the others (:meth:`take_readings`, :meth:`add_reading`) before the next
        round."""
        round_no = self._rounds
        self._rounds += 1
        reading = await self._available()
        if self.sharing:
            self._shared.append((round_no, reading))
        self.add_reading(round_no, reading)
        self._published = None
        for old in [r for r in self._readings if r < round_no - 1]:
            del self._readings[old]

    def take_readings(self) -> list[tuple[int, dict[Edge, int | None]]]:
        """The rounds read here since the last call, for the other regions."""
        shared, self._shared = self._shared, []
        return shared

    def add_reading(self, round_no: int, reading: Mapping[Edge, int | None]) -> None:
        self._readings.setdefault(round_no, {}).update(reading)

    async def arrive(self, km: str, down: bool, trip: object, promise: Promise | None) -> None:
        """A KM actor's handler for the relay messages reaching it."""
        await self.trips.arrive(km, down, trip, promise)

    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int,
                    provision: bool = False) -> list[bytes]:
        km = self.kms[self.directory.km_of(lkm_id)]
        result: list[bytes] = await km.ask(Generate(count, key_bytes, provision))
        return result

    async def fetch_slice(self, lkm_id: str, owner: str, home_lkm: str, count: int) -> Shipment:
        far, near = self.directory.km_of(home_lkm), self.directory.km_of(lkm_id)
        key_bits = self.key_bits.get(home_lkm)
        out = await self._trip(far, near, ShipJob(owner, home_lkm, lkm_id, count, key_bits))
        if out.cause == "home_reserve":
            self.record("relay_failure", far, to=near, keys=count, cause="home_reserve")
            return Shipment(owner, home_lkm, lkm_id, ())
        if not out.ok or out.shipment is None:
            self._cannot_relay(far, near, key_bits or 0, count, out.cause)
        sent = out.shipment
        held = ("links" if out.limited or out.carried < out.shipped else
                "home_reserve" if out.shipped < count else None)
        partial = {"requested": count, "partial": True, "held_by": held} if held else {}
        path = list(out.path)
        trusted = {"trusted": "-".join(path[1:-1])} if len(path) > 2 else {}
        self.record("relay", far, to=near, bits=sent.bits, keys=out.carried, hops=len(path) - 1,
                    path="-".join(path), sites=f"{home_lkm}>{lkm_id}",
                    delay_s=round(self.clock.now() - out.sent_s, 9), **trusted, **partial)
        return sent

    async def return_slice(self, shipment: Shipment) -> None:
        """Send the keys of a shipment its LKM did not take back along their route (the link
        key they spent stays spent)."""
        if shipment.keys:
            self.trips.go_home(shipment)

    async def consume_copies(self, lkm_id: str, to_lkm: str, key_ids: tuple[str, ...]) -> int:
        """A classical notice from one LKM to another (no key is relayed, so none is spent): it
        walks a path of up links and KMs to ``to_lkm``'s KM, and the count it erased walks
        back."""
        far, near = self.directory.km_of(to_lkm), self.directory.km_of(lkm_id)
        out = await self._trip(far, near, CopiesJob(to_lkm, key_ids))
        if not out.ok:
            raise KMUnreachable(f"no path of up links from {near} to {far}")
        return out.erased

    async def relay(self, src: str, dst: str, key_bits: int, count: int
                    ) -> tuple[list[str] | None, int, str]:
        """A bare relay of ``count`` keys of ``key_bits`` from ``src`` to ``dst``, asked by
        ``dst``: the path, the keys carried and "ok"; or None, 0 and why not."""
        out = await self._trip(src, dst, BitsJob(count, key_bits))
        return (list(out.path), out.carried, "ok") if out.ok else (None, 0, out.cause)

    async def _trip(self, far: str, near: str, job: Job) -> Outcome:
        """Send the job's trip over the routing policy's paths until one answers ok, or none is
        left; each failed try teaches which link or KM to avoid."""
        bad_edges: set[Edge] = set()
        bad_nodes: set[str] = set()
        cause = "no_path"
        key_bits = job.key_bits if isinstance(job, (ShipJob, BitsJob)) else None
        count = job.count if isinstance(job, (ShipJob, BitsJob)) else 1
        while True:
            path = await self._route(far, near, key_bits or 1, count, bad_edges, bad_nodes)
            if path is None:
                break
            ask = Ask(self.trips.ticket(), tuple(reversed(path)), job)
            out: Outcome = await self.kms[near].ask(Arrive(ask), RELAY_BOUND_S)
            if out.ok or out.final:
                return out
            if out.edge is not None:
                bad_edges.add(out.edge)
            if out.node is not None:
                bad_nodes.add(out.node)
            cause = "no_key" if out.cause == "no_key" else cause
        if self.routing != "fewest_hops" and cause == "no_path":
            cause = await self._why_not(far, near, bad_nodes)
        return Outcome(False, cause)

    async def _route(self, src: str, dst: str, key_bits: int, count: int,
                     bad_edges: set[Edge], bad_nodes: set[str]) -> list[str] | None:
        """The next path to try: fewest hops (remembered: the graph never changes), or, for
        ``widest`` and ``key_aware``, computed afresh from the published link state."""
        if self.routing == "fewest_hops":
            return self._path(src, dst, bad_edges, bad_nodes)
        available = {edge: bits for edge, bits in (await self._link_state()).items()
                     if bits is not None}
        if self.routing == "widest":
            return widest_path(self.graph, src, dst, available, key_bits, bad_edges, bad_nodes)
        return key_aware_path(self.graph, src, dst, available, key_bits, count * key_bits,
                              bad_edges, bad_nodes)

    async def _available(self) -> dict[Edge, int | None]:
        return {edge: await ref.ask(Available()) for edge, ref in sorted(self.links.items())}

    async def _link_state(self) -> dict[Edge, int | None]:
        """The published link state; without rounds (a network nobody publishes for), now."""
        if self._rounds == 0:
            return await self._available()
        if self._published is None:
            round_no = max(self._rounds - 2, 0)
            reading = self._readings.get(round_no, {})
            missing = self.graph.number_of_edges() - len(reading)
            if missing:
                raise RuntimeError(f"link-state round {round_no} lacks {missing} links' "
                                   "readings: a region's reading did not arrive in time")
            self._published = dict(sorted(reading.items()))
        return self._published

    async def _why_not(self, src: str, dst: str, bad_nodes: set[str]) -> str:
        """No usable path under a key-seeing policy: "no_key" if links that are up connect the
        two KMs (they are only short of key), else "no_path"."""
        up = {edge for edge, bits in (await self._link_state()).items() if bits is not None}
        down = [edge for edge in self.links if edge not in up]
        return "no_key" if shortest_path(self.graph, src, dst, down, bad_nodes) else "no_path"

    def _cannot_relay(self, src: str, dst: str, key_bits: int, keys: int, cause: str) -> NoReturn:
        self.record("relay_failure", src, to=dst, bits=key_bits * keys, keys=keys, cause=cause)
        if cause == "no_key":
            raise NoLinkKey(f"no path from {src} to {dst} holds {key_bits} bits of link key")
        raise KMUnreachable(f"no path from {src} to {dst}")

    def _path(self, src: str, dst: str, bad_edges: set[Edge],
              bad_nodes: set[str]) -> list[str] | None:
        """:func:`shortest_path`, remembered: the graph never changes (what is down is learnt
        per trip, as ``bad_*``), and a city asks the same few questions thousands of times."""
        key = (src, dst, frozenset(bad_edges), frozenset(bad_nodes))
        if key not in self._paths:
            self._paths[key] = shortest_path(self.graph, src, dst, bad_edges, bad_nodes)
        path = self._paths[key]
        return None if path is None else list(path)
