"""The pure parts of wiring a scenario into a network: its directory, link specs, flows by
sender, and the files a run keeps (each LKM's SQLite file in ``state/``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.keynode import Directory
from nodes.network import LinkSpec, edge_key
from nodes.run.scenario import Link, MailTraffic, ReplayTraffic, Scenario
from nodes.server import safe_file_stem
from nodes.traffic import Flow
from simulator import Outbox

SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def state_file(state_dir: Path, lkm_id: str) -> Path:
    """The SQLite file of LKM ``lkm_id`` in a run's ``state/`` folder."""
    return state_dir / f"{safe_file_stem(lkm_id)}.db"


def clear_state(scenario: Scenario, state_dir: Path) -> None:
    """Remove what a run of ``scenario`` writes in ``state_dir`` (each LKM's SQLite file and
    its journal), and nothing else found there."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for lkm in scenario.lkms:
        db = state_file(state_dir, lkm.id)
        for suffix in SQLITE_SIDE_FILES:
            Path(f"{db}{suffix}").unlink(missing_ok=True)


def unsupported(scenario: Scenario) -> list[str]:
    """What a valid scenario still needs from outside that is missing, as "path: message"
    lines (what an outage may target is checked with the scenario itself)."""
    return [f"traffic.{i}.replay: no such trace file '{flow.replay}'"
            for i, flow in enumerate(scenario.traffic)
            if isinstance(flow, ReplayTraffic) and not Path(flow.replay).is_file()]


def directory_of(scenario: Scenario) -> Directory:
    return Directory(sae_home={s.id: s.lkm for s in scenario.saes},
                     lkm_km={lkm.id: lkm.km for lkm in scenario.lkms},
                     sae_email={s.id: s.email for s in scenario.saes})


def rate_steps(link: Link) -> list[tuple[float, float]]:
    if link.kind == "curve":
        assert link.rate_curve is not None
        return [(point.at_s, point.rate_bps) for point in link.rate_curve]
    return [(0.0, link.rate_bps_at(0.0))]


def link_spec(link: Link) -> LinkSpec:
    model = link.physical()
    return LinkSpec(link.id, rate_steps(link), link.buffer_bits, link.initial_bits,
                    link.warmup_s or 0.0, link.block_bits, link.auth_block_bits,
                    link.auth_relay_bits, model, link.length_km or 0.0,
                    link.kind if link.preset is None else f"decoy_bb84:{link.preset}")


def flows_by_sender(scenario: Scenario) -> dict[str, list[Flow]]:
    flows: dict[str, list[Flow]] = {}
    for flow in scenario.traffic:
        if isinstance(flow, MailTraffic):
            flows.setdefault(flow.from_sae, []).append(
                Flow(flow.to_sae, flow.mails_per_hour, flow.mail_bytes))
    return flows


@dataclass(frozen=True)
class Part:
    """One region of a partitioned run: the KMs it holds, and with them the master ends of
    their links, their LKMs and those LKMs' SAEs (decision 70). ``outbox`` takes what its
    actors send to other regions' actors."""

    index: int
    kms: frozenset[str]
    outbox: Outbox


class Nobody:
    """Another region's KM or link, to an outage: what it is told there is applied there."""

    def tell(self, message: object) -> None:
        pass


@dataclass(frozen=True)
class Holding:
    """What one network (a whole run, or a region of one) holds, in scenario order."""

    kms: frozenset[str]
    links: tuple[Link, ...]
    lkms: tuple[str, ...]
    saes: tuple[str, ...]

    @classmethod
    def of(cls, scenario: Scenario, part: Part | None) -> Holding:
        kms = frozenset(km.id for km in scenario.kms) if part is None else part.kms
        lkms = tuple(lkm.id for lkm in scenario.lkms if lkm.km in kms)
        homes = set(lkms)
        return cls(kms, tuple(ln for ln in scenario.links if edge_key(ln.a, ln.b)[0] in kms),
                   lkms, tuple(sae.id for sae in scenario.saes if sae.lkm in homes))

    def owns(self, scenario: Scenario, node: str, first: bool) -> bool:
        """Whether an outage of ``node`` is recorded here: its KM's region (a link's master
        end's, an LKM's KM's); a partition in the first region."""
        kind = scenario.target_kind(node) if node != "partition" else None
        if kind == "KM":
            return node in self.kms
        if kind == "LKM":
            return scenario.lkm_settings(node).km in self.kms
        if kind == "link":
            a, b = node.split("-", 1)
            return edge_key(a, b)[0] in self.kms
        return first
