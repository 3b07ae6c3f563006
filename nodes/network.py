"""The builder: wires a validated scenario into a running simulated network.

Each LKM is a real served node (its actor, its SQLite file, its aiohttp site on 127.0.0.1) whose
clock is the simulation's; each SAE is a :class:`~nodes.sae.SimulatedSAE` that talks HTTP to its
home LKM. Until the KM network exists, each KM is stood in for by a
:class:`~nodes.supply.LocalKeySupply` fed by the run's seeded RNG, which a ``down`` outage takes
offline; what this build cannot run yet is refused up front with the scenario path that asks for
it, never silently ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import aiohttp

from nodes.config import NodeConfig, SyncPolicy
from nodes.messages import Audit, ListPools, Register
from nodes.pki import safe_file_stem
from nodes.sae import Flow, MailAudit, SimulatedSAE
from nodes.serve import ServedNode
from nodes.supply import LocalKeySupply
from simulator.actor import ActorRef
from simulator.faults import schedule_outages
from simulator.metrics import pool_node
from simulator.runtime import Simulation
from simulator.scenario import MailTraffic, Outage, Scenario, ScenarioError

SAMPLE_PRIORITY = 10  # pool samples come after everything else due at the same time


def unsupported(scenario: Scenario) -> list[str]:
    """What this build of qkdsim cannot run yet, as "path: message" lines."""
    errors = []
    home = {sae.id: sae.lkm for sae in scenario.saes}
    for i, flow in enumerate(scenario.traffic):
        if not isinstance(flow, MailTraffic):
            errors.append(f"traffic.{i}.replay: replaying a trace is not supported yet")
        elif home[flow.from_sae] != home[flow.to_sae]:
            errors.append(f"traffic.{i}: {flow.from_sae} and {flow.to_sae} are on different LKMs;"
                          " cross-site mail needs the KM network, not supported yet")
    for i, outage in enumerate(scenario.outages):
        if (scenario.target_kind(outage.target or ""), outage.kind) != ("KM", "down"):
            errors.append(f"outages.{i}.kind: '{outage.kind}' on "
                          f"{outage.target or 'a partition'} is not supported yet (KM down is)")
    return errors


class Network:
    def __init__(self, scenario: Scenario, sim: Simulation, state_dir: Path) -> None:
        errors = unsupported(scenario)
        if errors:
            raise ScenarioError(errors)
        self.scenario = scenario
        self.sim = sim
        self.state_dir = state_dir
        self.audit = MailAudit()
        self.supplies = {km.id: LocalKeySupply(sim.derived_rng(f"km:{km.id}").randbytes)
                         for km in scenario.kms}
        self.nodes: dict[str, ServedNode] = {}
        self.saes: dict[str, ActorRef[Any]] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        for lkm in self.scenario.lkms:
            await self._start_lkm(lkm.id)
        for sae in self.scenario.saes:
            await self._register(sae.id, sae.email, sae.lkm)
        for sae in self.scenario.saes:
            await self._spawn_sae(sae.id, sae.lkm)
        for ref in self.saes.values():
            self.sim.system.actor(ref.name).peers = self.saes  # type: ignore[attr-defined]
        for flow in self.scenario.traffic:
            assert isinstance(flow, MailTraffic)
            sender = self.sim.system.actor(flow.from_sae)
            sender.start_flow(Flow(flow.to_sae, flow.mails_per_hour, flow.mail_bytes))  # type: ignore[attr-defined]
        schedule_outages(self.sim, self.scenario.outages, self._apply_outage)
        self._schedule_sample(0.0)

    def node_config(self, lkm_id: str) -> NodeConfig:
        settings = self.scenario.lkm_settings(lkm_id)
        pool_sizes = [self.scenario.sae_pool_size(s.id) for s in self.scenario.saes
                      if s.lkm == lkm_id] or [settings.pool_size]
        sync = settings.sync
        return NodeConfig(
            kme_id=lkm_id, local_km_id=lkm_id, port=settings.port or 0,
            next_door_km_url=f"km://{settings.km}",
            db_path=str(self.state_dir / f"{safe_file_stem(lkm_id)}.db"),
            max_keys_per_request=settings.max_keys_per_request,
            key_size_bits=settings.key_size_bits, max_key_size_bits=settings.key_size_bits,
            min_key_size_bits=min(64, settings.key_size_bits),
            min_pool_size=1, max_pool_size=max(pool_sizes),
            sync=SyncPolicy(sync.interval_s, sync.threshold, sync.emergency))

    async def _start_lkm(self, lkm_id: str) -> None:
        km = self.scenario.lkm_settings(lkm_id).km
        node = ServedNode(self.node_config(lkm_id), self.sim.system, self.sim.clock,
                          self.supplies[km], observe=self.sim.record)
        await node.start()
        self.nodes[lkm_id] = node

    async def _register(self, sae_id: str, email: str, lkm_id: str) -> None:
        node = self.nodes[lkm_id]
        pool_size = self.scenario.sae_pool_size(sae_id)
        assert node.ref is not None
        await node.ref.ask(Register(sae_id, email, None, pool_size))
        threshold = self.scenario.lkm_settings(lkm_id).sync.threshold
        self.sim.sample(pool_node(lkm_id, sae_id), "pool_threshold_keys",
                        math.ceil(pool_size * threshold))

    async def _spawn_sae(self, sae_id: str, lkm_id: str) -> None:
        assert self.session is not None
        settings = self.scenario.lkm_settings(lkm_id)
        actor = SimulatedSAE(sae_id, self.nodes[lkm_id].url, self.session, self.sim.clock,
                             self.sim.derived_rng(f"sae:{sae_id}"), self.sim.record, self.audit,
                             settings.key_size_bits, settings.max_keys_per_request)
        self.saes[sae_id] = await self.sim.spawn(actor)

    def _apply_outage(self, outage: Outage, starting: bool) -> None:
        self.supplies[outage.target or ""].up = not starting

    def _schedule_sample(self, delay_s: float) -> None:
        def fire() -> None:
            self.sim.start_task(self.sample_pools())
            self._schedule_sample(self.scenario.sample_interval_s)

        self.sim.clock.call_later(delay_s, fire, SAMPLE_PRIORITY)

    async def sample_pools(self) -> None:
        for lkm_id, node in self.nodes.items():
            assert node.ref is not None
            reply = await node.ref.ask(ListPools())
            for pool in reply["pools"]:
                self.sim.sample(pool_node(lkm_id, pool["sae_id"]), "pool_keys",
                                pool["available_keys"])

    async def audit_counts(self) -> dict[str, int]:
        """The SAEs' audit plus the stores' own: key material stored twice counts as reuse."""
        counts = self.audit.as_dict()
        for node in self.nodes.values():
            assert node.ref is not None
            counts["reused_key_ids"] += (await node.ref.ask(Audit()))["duplicate_material"]
        return counts

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        for node in self.nodes.values():
            await node.stop()
