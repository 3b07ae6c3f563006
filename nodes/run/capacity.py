"""What a scenario asks of its links, checked before it runs: slices and the link buffers on
their paths.

Every sender's LKM keeps a slice of each remote receiver's pool (:func:`slice_pairs`), filled by
relaying keys from the receiver's home KM over the KM graph. A full top-up (the whole slice, from
empty) that no path's buffers can hold at once is not an error: top-ups are partial (a relay
carries the whole keys its path holds), so the slice fills over several syncs. It is a warning
(:func:`capacity_warnings`), because it is rarely what the author meant and it is what made
``two_sites`` with ``pool_size: 3000`` fail every send before top-ups could be partial.
"""

from __future__ import annotations

from nodes.network import bottleneck, edge_key, km_graph
from nodes.run.scenario import MailTraffic, ReplayTraffic, Scenario


def slice_size(configured: int | None, pool_size: int) -> int:
    """The sender's LKM keeps ``slice_size`` keys of a remote receiver's pool (default: half)."""
    return configured or max(10, pool_size // 2)


def slice_pairs(scenario: Scenario, serving: bool = False) -> list[tuple[str, str]]:
    """(sender's LKM, remote receiver) for every mail flow; when serving external clients (or
    replaying them), every LKM gets a slice of every remote SAE, since any of them may be
    written to."""
    if serving or any(isinstance(f, ReplayTraffic) for f in scenario.traffic):
        return [(lkm.id, sae.id) for lkm in scenario.lkms for sae in scenario.saes
                if sae.lkm != lkm.id]
    home = {sae.id: sae.lkm for sae in scenario.saes}
    pairs = []
    for flow in scenario.traffic:
        if isinstance(flow, MailTraffic) and home[flow.from_sae] != home[flow.to_sae]:
            pairs.append((home[flow.from_sae], flow.to_sae))
    return pairs


def capacity_warnings(scenario: Scenario, serving: bool = False) -> list[str]:
    """One line per slice whose full top-up fits no path between its two KMs, naming the slice,
    the narrowest link of the fewest-hop path, and both sizes."""
    graph = km_graph([km.id for km in scenario.kms], [(ln.a, ln.b) for ln in scenario.links])
    links = {edge_key(ln.a, ln.b): ln for ln in scenario.links}
    room = {edge: ln.buffer_bits - ln.auth_relay_bits for edge, ln in links.items()}
    km_of = {lkm.id: lkm.km for lkm in scenario.lkms}
    lines = []
    for here, receiver in dict.fromkeys(slice_pairs(scenario, serving)):
        home_lkm = scenario.sae(receiver).lkm
        src, dst = km_of[home_lkm], km_of[here]
        keys = slice_size(scenario.lkm_settings(here).slice_size,
                          scenario.sae_pool_size(receiver))
        bits = keys * scenario.lkm_settings(home_lkm).key_size_bits
        edge = bottleneck(graph, src, dst, room, bits)
        if edge is None:
            continue
        link = links[edge]
        lines.append(
            f"slice {here}/{receiver}: a full top-up of {keys} keys ({bits:,} bits) can never "
            f"fit link {link.id} (buffer_bits {link.buffer_bits:,}) on its path from {src} to "
            f"{dst}, nor any other path; it will fill over several partial top-ups")
    return lines
