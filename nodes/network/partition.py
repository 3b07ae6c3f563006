"""Splitting a KM graph into regions for a partitioned run, and the lookahead that allows.

A partitioned run gives each region (its KMs, and the links, LKMs and users homed there) to one
process. Regions only meet through relay messages over **cut links**, which take at least the
smallest hop delay of any cut link (its fibre's propagation plus the KMs' per-hop processing):
that is the **lookahead**, how far a region may run ahead before it must hear from the others.
Fewer cut links mean fewer messages to exchange; a cut link with no delay leaves no lookahead at
all, and such a split is refused.

The split is recursive bisection minimising the links cut: the region with most KMs is halved
until there are ``n``. Each halving refines two starts with Kernighan-Lin (networkx) and keeps
the one that cuts fewest links: halves grown from up to eight KMs spread over the region,
greedily and breadth-first (the graph-growing starts of multilevel partitioners such as METIS), and networkx's seeded random
starts. The same
graph, ``n`` and seed always give the same regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import networkx as nx

from nodes.network.routing import Edge, edge_key

GROWN_STARTS = 8
RANDOM_STARTS = 4


class NoLookahead(ValueError):
    """The regions would meet over links that take no time: nothing bounds how far one may run
    ahead of another."""


@dataclass(frozen=True, slots=True)
class Plan:
    """``regions``: the KMs of each region, sorted, regions in order of their first KM;
    ``cut``: the links between regions, each with its hop delay; ``lookahead_s``: the smallest
    of those (infinite with one region)."""

    regions: tuple[tuple[str, ...], ...]
    cut: tuple[tuple[Edge, float], ...]
    lookahead_s: float

    def region_of(self) -> dict[str, int]:
        return {km: index for index, kms in enumerate(self.regions) for km in kms}


def plan_partitions(graph: nx.Graph, hop_delay_s: Mapping[Edge, float], n: int,
                    seed: int = 0) -> Plan:
    """Split ``graph`` into ``n`` regions minimising cut links (see the module docstring).
    ``hop_delay_s`` gives each link's delay (keyed by :func:`edge_key`). Raises ValueError for an
    ``n`` the graph cannot give, NoLookahead when a cut link has no delay."""
    kms = sorted(graph.nodes)
    if not 1 <= n <= len(kms):
        raise ValueError(f"partitions must be between 1 and the number of KMs ({len(kms)}), "
                         f"not {n}")
    regions: list[set[str]] = [set(kms)]
    while len(regions) < n:
        largest = min(regions, key=lambda r: (-len(r), min(r)))
        regions.remove(largest)
        regions.extend(_bisect(graph.subgraph(sorted(largest)), seed))
    ordered = tuple(sorted(tuple(sorted(region)) for region in regions))
    where = {km: index for index, region in enumerate(ordered) for km in region}
    cut = tuple(sorted((edge_key(a, b), hop_delay_s[edge_key(a, b)])
                       for a, b in graph.edges if where[a] != where[b]))
    lookahead_s = min((delay for _, delay in cut), default=float("inf"))
    if cut and lookahead_s <= 0:
        instant = ", ".join(f"{a}-{b}" for (a, b), delay in cut if delay <= 0)
        raise NoLookahead(
            f"no lookahead: cut links {instant} take no time (length_km 0 and hop_processing 0), "
            "so no region could run ahead of another; give those links a length, or "
            "hop_processing above 0, or use fewer partitions")
    return Plan(ordered, cut, lookahead_s)


def _bisect(graph: nx.Graph, seed: int) -> list[set[str]]:
    """The best of several Kernighan-Lin refinements (fewest links cut; the first on ties)."""
    kms = sorted(graph)
    growers = [kms[i * len(kms) // GROWN_STARTS] for i in range(min(GROWN_STARTS, len(kms)))]
    starts = [grow(graph, km) for grow in (_grown_half, _breadth_half)
              for km in dict.fromkeys(growers)]
    tries = [nx.community.kernighan_lin_bisection(graph, (half, set(kms) - half))
             for half in starts]
    tries += [nx.community.kernighan_lin_bisection(graph, seed=seed + i)
              for i in range(RANDOM_STARTS)]
    best = min(tries, key=lambda halves: sum(1 for a, b in graph.edges
                                             if (a in halves[0]) != (b in halves[0])))
    return [set(half) for half in best]


def _grown_half(graph: nx.Graph, start: str) -> set[str]:
    """Half the KMs grown greedily from ``start``: each step takes the KM next to the half
    whose joining cuts the fewest links (most links into the half, fewest out; then name
    order), or the first-named KM left when none is next to it."""
    inside = {start}
    gain: dict[str, int] = {}  # frontier KM -> links into the half minus links elsewhere
    adj = graph.adj

    def touch(km: str) -> None:
        for near in adj[km]:
            if near not in inside:
                gain[near] = sum(1 if n in inside else -1 for n in adj[near])

    touch(start)
    left = sorted(graph)
    while len(inside) < len(left) // 2:
        if gain:
            km = min(gain, key=lambda k: (-gain[k], k))
            del gain[km]
        else:
            km = next(k for k in left if k not in inside)
        inside.add(km)
        touch(km)
    return inside


def _breadth_half(graph: nx.Graph, start: str) -> set[str]:
    """Half the KMs in breadth-first order from ``start`` (then the KMs it cannot reach, in
    name order)."""
    order = [start] + [b for _, b in nx.bfs_edges(graph, start, sort_neighbors=sorted)]
    order += [km for km in sorted(graph) if km not in set(order)]
    return set(order[:len(order) // 2])


def cut_links(graph: nx.Graph, regions: tuple[tuple[str, ...], ...]) -> int:
    """How many links of ``graph`` join two of ``regions``."""
    where = {km: index for index, region in enumerate(regions) for km in region}
    return sum(1 for a, b in graph.edges if where[a] != where[b])
