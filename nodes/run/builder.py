"""The builder: wires a validated scenario into a running simulated network.

Each KM is a :class:`~nodes.network.km.KeyManager` actor, each QKD link a
:class:`~nodes.network.link.QKDLink` actor, and each LKM a real served node (its actor, its SQLite
file, its aiohttp site on 127.0.0.1) whose clock is the simulation's and whose key supply is the
:class:`~nodes.network.relay.KMNetwork`. Each SAE is a :class:`~nodes.traffic.sae.SimulatedSAE`
that talks to its home LKM over HTTP (or, with ``transport: direct``, in ETSI messages to its
actor); it gets its flows and its peers when it is made, and nothing reaches into an actor
afterwards. For every traffic flow between SAEs on different LKMs the sender's LKM keeps a slice
of the receiver's pool, filled before the run starts. Outages are the table's
(:mod:`nodes.run.outages`); the builder is the :class:`~nodes.run.outages.Fabric` they act on.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Coroutine, Mapping, Sequence, cast

import aiohttp

from nodes.keynode import (
    AddRemote,
    Audit,
    ListPools,
    NodeConfig,
    Register,
    SenderQuota,
    Sync,
    SyncPolicy,
    TlsFiles,
    pool_node,
    simulated_cache_kib,
)
from nodes.network import (
    Edge,
    GetAccount,
    KeyManager,
    KMNetwork,
    Level,
    QKDLink,
    SetLatency,
    edge_key,
    km_graph,
)
from nodes.run.capacity import slice_pairs, slice_size
from nodes.run.control import OutageControl
from nodes.run.expect import LINK_BUFFER_BITS, POOL_KEYS, POOLS_CHANGED
from nodes.run.outages import schedule_outages
from nodes.run.scenario import ReplayTraffic, Scenario, ScenarioError
from nodes.run.scenario import SenderQuota as ScenarioQuota
from nodes.run.wiring import (
    Holding,
    Nobody,
    Part,
    clear_state,
    directory_of,
    flows_by_sender,
    link_spec,
    state_file,
    unsupported,
)
from nodes.server import ServedNode
from nodes.traffic import (
    DirectTransport,
    Flow,
    HttpTransport,
    MailAudit,
    Replayer,
    SimulatedSAE,
    TraceWriter,
    Transport,
    load_trace,
    recorder_hook,
)
from simulator import ActorRef, Simulation

__all__ = ["Network", "clear_state", "state_file", "unsupported"]

SAMPLE_PRIORITY = 10  # pool samples come after everything else due at the same time
WALL_SAMPLE_S = 5.0  # a served run's default sample interval, in wall seconds


class Network:
    def __init__(self, scenario: Scenario, sim: Simulation, state_dir: Path,
                 trace: TraceWriter | None = None, serving: bool = False,
                 tls: Mapping[str, TlsFiles] | None = None, part: Part | None = None) -> None:
        errors = unsupported(scenario)
        if errors:
            raise ScenarioError(errors)
        self.scenario = scenario
        self.sim = sim
        self.trace = trace
        self.serving = serving
        self.tls = dict(tls or {})  # LKM -> its certificate, when served over mutual TLS
        self.state_dir = state_dir
        self.part = part  # a region of a partitioned run; None: the whole network
        self.holds = Holding.of(scenario, part)
        self.audit = MailAudit()
        self.directory = directory_of(scenario)
        self.kms: dict[str, ActorRef[Any]] = {}
        self.links: dict[Edge, ActorRef[Any]] = {}
        self.lkm_refs: dict[str, ActorRef[Any]] = {}
        graph = km_graph([km.id for km in scenario.kms], [(ln.a, ln.b) for ln in scenario.links])
        key_bits = {lkm.id: scenario.lkm_settings(lkm.id).key_size_bits for lkm in scenario.lkms}
        lengths = {edge_key(ln.a, ln.b): ln.length_km or 0.0 for ln in scenario.links}
        self.km_network = KMNetwork(self.directory, graph, self.kms, self.links, self.lkm_refs,
                                    sim.record, sim.clock, key_bits, scenario.hop_processing_s,
                                    scenario.routing, lengths)
        self.km_network.sharing = part is not None
        self.nodes: dict[str, ServedNode] = {}
        self._ports: dict[str, int] = {}
        self._crash_causes: dict[str, set[str]] = {}
        self.saes: dict[str, ActorRef[Any]] = {}
        self.flow_streams = sim.derived_stream  # one bound method for every SAE, not one each
        self.session: aiohttp.ClientSession | None = None
        self._levels: dict[str, dict[str, int]] = {}  # LKM -> pool -> the level last written
        self._written: dict[str, set[str]] = {}  # LKM -> the pools written at _pass_s
        self._pass_s = -1.0
        self.shared_fired = 0  # timers of the whole network fired (samples, link-state rounds)

    async def start(self) -> None:
        await self.start_links()
        await self.start_users()

    async def start_links(self) -> None:
        """KMs and links, and the first link-state round (a partitioned run's regions then
        exchange their readings before anyone routes)."""
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        await self._start_fabric()
        if self.scenario.routing != "fewest_hops":  # key-seeing routes need link-state rounds
            await self.km_network.publish_link_state()
            self._schedule(self.scenario.routing_update_s, self.km_network.publish_link_state, 0)

    async def start_users(self) -> None:
        """LKMs, their users and slices, the traffic, the outages and the samples."""
        holds, scenario = self.holds, self.scenario
        for lkm_id in holds.lkms:
            await self._start_lkm(lkm_id)
        for sae in scenario.saes:
            if sae.id in holds.saes:
                await self._register(sae.id, sae.email, sae.lkm)
            else:  # another region's: mail to it is a letter
                self.saes[sae.id] = self._remote(sae.id)
        await self._open_slices()
        flows = flows_by_sender(scenario)
        for sae in scenario.saes:
            if sae.id in holds.saes:
                await self._spawn_sae(sae.id, sae.lkm, flows.get(sae.id, ()))
        for flow in scenario.traffic:
            if isinstance(flow, ReplayTraffic):
                await self._start_replay(Path(flow.replay))
        schedule_outages(self.sim, self, scenario.outages, scenario.target_kind,
                         lambda node: holds.owns(scenario, node, self._first))
        self._schedule(self.sample_interval_s, self.sample_pools, SAMPLE_PRIORITY, 0.0)

    @property
    def _first(self) -> bool:
        return self.part is None or self.part.index == 0

    def _remote(self, name: str) -> ActorRef[Any]:
        assert self.part is not None
        return cast(ActorRef[Any], self.part.outbox.ref(name))

    def node_config(self, lkm_id: str) -> NodeConfig:
        settings = self.scenario.lkm_settings(lkm_id)
        pool_sizes = [self.scenario.sae_pool_size(s.id)
                      for s in self.scenario.saes_at(lkm_id)] or [settings.pool_size]
        sync = settings.sync
        return NodeConfig(
            kme_id=lkm_id, local_km_id=lkm_id, port=settings.port or 0,
            next_door_km_url=f"km://{settings.km}",
            db_path=str(state_file(self.state_dir, lkm_id)),
            max_keys_per_request=settings.max_keys_per_request,
            key_size_bits=settings.key_size_bits,
            max_key_size_bits=settings.key_size_bits * max(1, 4096 // settings.key_size_bits),
            min_key_size_bits=min(64, settings.key_size_bits),
            min_pool_size=1, max_pool_size=max(pool_sizes),
            sync=SyncPolicy(sync.interval_s, sync.threshold, sync.emergency),
            inline_store=self.scenario.clock == "virtual" and not self.serving,
            store_cache_kib=simulated_cache_kib(len(self.scenario.lkms)),
            seed=self.scenario.seed, profile=settings.profile,
            status_shape=settings.status_shape, sender_quota=_quota(settings.sender_quota),
            operators=self.scenario.operators,
            admin_token=os.environ.get("ADMIN_TOKEN") or None if self.serving else None,
            use_https=lkm_id in self.tls, tls=self.tls.get(lkm_id))

    async def _start_fabric(self) -> None:
        for km in self.scenario.kms:
            if km.id not in self.holds.kms:
                self.kms[km.id] = self._remote(km.id)
                continue
            manager = KeyManager(km.id, km.key_rate_bps, self.sim.clock,
                                 self.sim.derived_rng(f"km:{km.id}"), self.sim.record,
                                 self.km_network.arrive)
            self.kms[km.id] = await self.sim.spawn(manager)
        for link in self.holds.links:
            qkd_link = QKDLink(link_spec(link), self.sim.clock, self.sim.record)
            self.links[edge_key(link.a, link.b)] = await self.sim.spawn(qkd_link)

    async def _start_replay(self, path: Path) -> None:
        assert self.session is not None
        urls = {lkm_id: node.url for lkm_id, node in self.nodes.items()}
        control = OutageControl(self.sim, self, self.scenario)  # the trace's injected outages
        replayer = Replayer(load_trace(path), urls, self.session, self.sim.clock,
                            self.sim.record, control.replay)
        await self.sim.spawn(replayer)

    def _served_node(self, lkm_id: str, config: NodeConfig) -> ServedNode:
        hooks = [] if self.trace is None else [recorder_hook(lkm_id, self.sim.clock, self.trace)]
        return ServedNode(config, self.sim.system, self.sim.clock, self.km_network,
                          observe=self.sim.record, directory=self.directory, app_hooks=hooks)

    async def _start_lkm(self, lkm_id: str, port: int | None = None) -> None:
        config = self.node_config(lkm_id)
        node = self._served_node(lkm_id, config if port is None else
                                 config.with_values(port=port))
        await node.start()
        assert node.ref is not None
        self.nodes[lkm_id] = node
        self.lkm_refs[lkm_id] = node.ref

    async def _open_slices(self) -> None:
        """Give each sender's LKM a slice of every remote receiver's pool, and fill it: the
        syncs are queued, and the workers carry them out as the clock settles. A served
        network waits for those first fills to end (the relays take wall time), so that it
        announces itself with its slices filled."""
        wanted: dict[str, set[str]] = {}
        for here, receiver in slice_pairs(self.scenario, self.serving):
            wanted.setdefault(here, set()).add(receiver)
        fills = []
        for lkm_id, receivers in sorted(wanted.items()):
            if lkm_id not in self.lkm_refs:  # another region's
                continue
            ref = self.lkm_refs[lkm_id]
            for sae in sorted(receivers):
                size = slice_size(self.scenario.lkm_settings(lkm_id).slice_size,
                                  self.scenario.sae_pool_size(sae))
                await ref.ask(AddRemote(sae, self.directory.sae_home[sae], size,
                                        self.directory.sae_email.get(sae)))
                self._threshold_sample(lkm_id, sae, size)
            if self.serving:
                fills.append(ref.ask(Sync("manual", tuple(sorted(receivers)), wait=True)))
            else:
                await ref.ask(Sync("manual", tuple(sorted(receivers))))
        await asyncio.gather(*fills)
        await self.sim.settle()

    def _threshold_sample(self, lkm_id: str, sae_id: str, pool_size: int) -> None:
        threshold = self.scenario.lkm_settings(lkm_id).sync.threshold
        self.sim.sample(pool_node(lkm_id, sae_id), "pool_threshold_keys",
                        math.ceil(pool_size * threshold))

    async def _register(self, sae_id: str, email: str, lkm_id: str) -> None:
        pool_size = self.scenario.sae_pool_size(sae_id)
        await self.lkm_refs[lkm_id].ask(Register(sae_id, email, None, pool_size))
        self._threshold_sample(lkm_id, sae_id, pool_size)

    async def _spawn_sae(self, sae_id: str, lkm_id: str, flows: Sequence[Flow]) -> None:
        assert self.session is not None
        settings = self.scenario.lkm_settings(lkm_id)
        transport: Transport
        if self.scenario.transport == "direct":
            transport = DirectTransport(lambda: self.lkm_refs.get(lkm_id))
        else:
            transport = HttpTransport(self.session, self.nodes[lkm_id].url)
        actor = SimulatedSAE(sae_id, transport, self.sim.clock,
                             self.flow_streams, self.sim.record, self.audit,
                             settings.key_size_bits, settings.max_keys_per_request,
                             MappingProxyType(self.saes), flows, self.scenario.mail_delay_s)
        self.saes[sae_id] = await self.sim.spawn(actor)

    # -- what outages act on (nodes.run.outages.Fabric) -------------------------------------

    def km(self, km_id: str) -> ActorRef[Any]:
        return self.kms[km_id] if km_id in self.holds.kms else cast(ActorRef[Any], Nobody())

    def link(self, edge: Edge) -> ActorRef[Any]:
        return self.links.get(edge) or cast(ActorRef[Any], Nobody())

    def set_latency(self, edge: Edge, delay_s: float, cause: str = "") -> None:
        self.link(edge).tell(SetLatency(delay_s, cause))  # what the link reports
        self.km_network.set_latency(edge, delay_s, cause)  # what relays take, at either end

    def edges(self) -> list[Edge]:
        return sorted({edge_key(ln.a, ln.b) for ln in self.scenario.links})

    def crash(self, lkm_id: str, cause: str = "") -> None:
        """The LKM process dies: its site and actor (with all in-memory state) are gone; its
        SQLite file stays, with every transaction it committed. A crash overlapping another
        of the same LKM changes nothing until the last one ends."""
        holding = self._crash_causes.setdefault(lkm_id, set())
        holding.add(cause)
        if len(holding) > 1 or lkm_id not in self.holds.lkms:
            return
        node = self.nodes[lkm_id]
        self.lkm_refs.pop(lkm_id, None)
        self._ports[lkm_id] = node.port or 0
        self.sim.start_task(node.stop())

    def restart(self, lkm_id: str, cause: str = "") -> None:
        """A new process on the same database and port, once no crash holds the LKM down."""
        holding = self._crash_causes.get(lkm_id, set())
        holding.discard(cause)
        if holding or lkm_id not in self.holds.lkms:
            return
        self.sim.start_task(self._start_lkm(lkm_id, self._ports[lkm_id]))

    # -- sampling and auditing ---------------------------------------------------------------

    @property
    def sample_interval_s(self) -> float:
        """The scenario's ``sample_interval``; unset, a served (wall-clock) run samples every
        5 s of wall time, since a client is watching, and a virtual run every 10 minutes."""
        scenario = self.scenario
        if self.serving and "sample_interval_s" not in scenario.model_fields_set:
            return WALL_SAMPLE_S * scenario.time_scale
        return scenario.sample_interval_s

    def _schedule(self, every_s: float, work: Callable[[], Coroutine[Any, Any, None]],
                  priority: int, first_s: float | None = None) -> None:
        def fire() -> None:
            self.shared_fired += 1  # every region of a partitioned run fires these
            self.sim.start_task(work())
            self.sim.clock.call_later(every_s, fire, priority)

        self.sim.clock.call_later(every_s if first_s is None else first_s, fire, priority)

    async def sample_pools(self, closing: bool = False) -> None:
        """One pass (decision 63): every link's buffer; for each LKM that is up, the number of
        its pools whose level changed since its last pass (``pools_changed``: the pass's
        mark), and a ``pool_keys`` row for each of those pools only. A level holds until the
        pool's next row; ``closing`` (the end of a run) writes every pool that has no row at
        this instant, so every series reaches the end."""
        now = self.sim.clock.now()
        fresh = self._pass_s != now  # else a closing pass right after a regular one
        if fresh:
            self._pass_s, self._written = now, {}
        for link in self.holds.links if fresh or not closing else ():
            level = await self.links[edge_key(link.a, link.b)].ask(Level())
            self.sim.sample(link.id, LINK_BUFFER_BITS, round(level))
        for lkm_id, node in self.nodes.items():
            if node.ref is None:  # crashed
                continue
            known = self._levels.setdefault(lkm_id, {})
            written = self._written.setdefault(lkm_id, set())
            levels = await node.ref.ask(ListPools(levels_only=True))
            changed = [(sae_id, keys) for sae_id, keys in levels if known.get(sae_id) != keys]
            count = len(changed)
            if closing:
                changed += [(sae_id, keys) for sae_id, keys in levels
                            if known.get(sae_id) == keys and sae_id not in written]
            for sae_id, keys in changed:
                known[sae_id] = keys
                written.add(sae_id)
                self.sim.sample(pool_node(lkm_id, sae_id), POOL_KEYS, keys)
            if fresh or not closing:  # after its rows: a live view then holds the rest
                self.sim.sample(lkm_id, POOLS_CHANGED, count)

    async def link_accounts(self) -> list[dict[str, Any]]:
        """Every link's books (:meth:`nodes.network.QKDLink.account`), in scenario order."""
        return [await self.links[edge_key(link.a, link.b)].ask(GetAccount())
                for link in self.holds.links]

    async def audit_counts(self) -> dict[str, int]:
        """The SAEs' audit plus the stores' own: key material stored twice counts as reuse."""
        counts = self.audit.as_dict()
        for node in self.nodes.values():
            if node.ref is None:
                continue
            counts["reused_key_ids"] += (await node.ref.ask(Audit()))["duplicate_material"]
        return counts

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        for node in self.nodes.values():
            await node.stop()


def _quota(quota: ScenarioQuota | None) -> SenderQuota | None:
    """A scenario's sender quota for the node; the burst defaults to an hour's worth."""
    if quota is None:
        return None
    return SenderQuota(quota.keys_per_hour, quota.burst or max(1, math.ceil(quota.keys_per_hour)))
