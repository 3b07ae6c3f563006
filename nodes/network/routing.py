"""Path selection over the KM graph: pure functions on a networkx graph."""

from __future__ import annotations

from typing import Collection, Iterable, Mapping

import networkx as nx

Edge = tuple[str, str]


def km_graph(kms: Iterable[str], links: Iterable[Edge]) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(sorted(kms))
    graph.add_edges_from(links)
    return graph


def edge_key(a: str, b: str) -> Edge:
    """The one name of an undirected link, whichever way it is walked."""
    return (a, b) if a <= b else (b, a)


def shortest_path(graph: nx.Graph, src: str, dst: str, bad_edges: Collection[Edge] = (),
                  bad_nodes: Collection[str] = ()) -> list[str] | None:
    """The fewest-hop path avoiding the given links and KMs (ties: the first in name order).

    ``src`` and ``dst`` themselves are never avoided. None when no path exists.
    """
    if src == dst:
        return [src]
    return _first_path(graph.adj, src, dst, bad_edges, bad_nodes)


def first_shortest_path(graph: nx.Graph, src: str, dst: str) -> list[str] | None:
    """The fewest-hop path that comes first in name order, i.e. ``min(all_shortest_paths)``,
    without listing them all (a ring of hundreds of KMs has very many). None when ``dst``
    cannot be reached."""
    return _first_path(graph.adj, src, dst, (), ())


def _first_path(adj: Mapping[str, Iterable[str]], src: str, dst: str,
                bad_edges: Collection[Edge], bad_nodes: Collection[str]) -> list[str] | None:
    """A breadth-first search from ``dst`` (level by level, until the level that reaches
    ``src``), then from ``src`` always the first-named neighbour one hop closer. On the graph's
    own adjacency, with the avoided links and KMs tested inline: the same search through a
    networkx subgraph view was half of a 1,000-LKM day's time (relays learn what is down or
    short, so each asks with its own avoided set, and the memo of paths misses)."""
    if src not in adj or dst not in adj:
        return None
    distance, frontier, level = {dst: 0}, [dst], 0
    while frontier and src not in distance:
        level += 1
        reached = []
        for node in frontier:
            for near in adj[node]:
                if near in distance or (near in bad_nodes and near != src):
                    continue
                if bad_edges and edge_key(node, near) in bad_edges:
                    continue
                distance[near] = level
                reached.append(near)
        frontier = reached
    if src not in distance:
        return None
    path, node = [src], src
    while node != dst:
        closer = distance[node] - 1
        node = min(near for near in adj[node] if distance.get(near) == closer
                   and not (bad_edges and edge_key(node, near) in bad_edges))
        path.append(node)
    return path


def hops(path: list[str]) -> list[Edge]:
    return [edge_key(a, b) for a, b in zip(path, path[1:])]


def bottleneck(graph: nx.Graph, src: str, dst: str, capacity: Mapping[Edge, int],
               need: int) -> Edge | None:
    """The narrowest link of the fewest-hop path from ``src`` to ``dst`` when no path's links
    can all hold ``need`` at once; None when one can (or when there is no path at all)."""
    if src == dst or not nx.has_path(graph, src, dst):
        return None
    wide = nx.subgraph_view(graph, filter_edge=lambda a, b: capacity[edge_key(a, b)] >= need)
    if nx.has_path(wide, src, dst):
        return None
    path = first_shortest_path(graph, src, dst)
    assert path is not None  # has_path said so
    return min(hops(path), key=lambda edge: (capacity[edge], edge))


ROUTING_POLICIES = ("fewest_hops", "widest", "key_aware")


def widest_path(graph: nx.Graph, src: str, dst: str, available: Mapping[Edge, int],
                need: int, bad_edges: Collection[Edge] = (),
                bad_nodes: Collection[str] = ()) -> list[str] | None:
    """The path whose smallest available buffer is largest (at least ``need``); among those,
    the fewest hops, ties in name order."""
    levels = sorted({bits for edge, bits in available.items() if bits >= need and
                     edge not in bad_edges}, reverse=True)
    for level in levels:  # the widest level at which src and dst still connect
        narrow = {edge for edge, bits in available.items() if bits < level}
        path = shortest_path(graph, src, dst, {*bad_edges, *narrow}, bad_nodes)
        if path is not None:
            return path
    return None


def key_aware_path(graph: nx.Graph, src: str, dst: str, available: Mapping[Edge, int],
                   need: int, demand: int, bad_edges: Collection[Edge] = (),
                   bad_nodes: Collection[str] = ()) -> list[str] | None:
    """The least-cost path where a hop costs ``1 + demand / available``: about one per hop while
    key is plentiful, rising steeply as a link's key falls towards what the relay asks for
    (links that hold less than ``need``, one key, are left out)."""
    if src == dst:
        return [src]
    view = nx.subgraph_view(
        graph, filter_node=lambda n: n in (src, dst) or n not in bad_nodes,
        filter_edge=lambda a, b: edge_key(a, b) not in bad_edges
        and available.get(edge_key(a, b), 0) >= need)

    def cost(a: str, b: str, _: object) -> float:
        return 1.0 + demand / max(available[edge_key(a, b)], 1)

    try:
        return list(nx.dijkstra_path(view, src, dst, weight=cost))
    except nx.NetworkXNoPath:
        return None
