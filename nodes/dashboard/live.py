"""What the dashboard shows, kept up to date from the run's recorder as rows are recorded.

A :class:`LiveView` listens to the recorder (every sample and event, as it is written to the
run's files) and keeps only what the page draws, bounded whatever the traffic: the last
``HISTORY`` samples of each pool and link, the last ``RECENT`` syncs, deliveries and failures,
counts per kind, and the outage timeline. :meth:`LiveView.since` hands a page what changed
after the point it last saw; with more than ``MAX_POOL_LINES`` pools, the pools also come as
aggregates (lowest, median, highest fill), which is what the page draws then.
"""

from __future__ import annotations

import statistics
from collections import deque
from typing import Any

from simulator import Event, Sample

HISTORY = 720  # samples kept per pool and link: an hour at the served default of 5 s
RECENT = 200  # events kept for the stream
MAX_POOL_LINES = 12
SHOWN_KINDS = ("sync", "delivery", "consumed", "failure", "receive_failure", "relay",
               "relay_failure", "quota", "outage", "link_state")


class LiveView:
    def __init__(self) -> None:
        self.pools: dict[str, deque[tuple[float, float]]] = {}
        self.pools_at: dict[str, list[str]] = {}  # LKM -> its pools
        self.links: dict[str, deque[tuple[float, float]]] = {}
        self.link_states: dict[str, str] = {}
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=RECENT)
        self.counts: dict[str, int] = {}
        self.outages: list[dict[str, Any]] = []  # the timeline: start, end (None: going on)
        self.now_s = 0.0
        self.seq = 0  # rows seen: a page asks for what came after the seq it saw

    def __call__(self, row: Sample | Event) -> None:
        self.seq += 1
        self.now_s = max(self.now_s, row.t_s)
        if isinstance(row, Sample):
            if row.metric == "pools_changed":
                self._hold(row.node, row.t_s)
                return
            series = {"pool_keys": self.pools, "link_buffer_bits": self.links}.get(row.metric)
            if series is not None:
                if row.node not in series:
                    series[row.node] = deque(maxlen=HISTORY)
                    if series is self.pools:
                        self.pools_at.setdefault(row.node.split("/", 1)[0], []).append(row.node)
                series[row.node].append((row.t_s, row.value))
            return
        self.counts[row.kind] = self.counts.get(row.kind, 0) + 1
        if row.kind == "link_state":
            self.link_states[row.node] = str(row.get("state"))
        if row.kind == "outage":
            self._outage(row)
        if row.kind in SHOWN_KINDS:
            self.events.append((self.seq, {"t_s": row.t_s, "kind": row.kind, "node": row.node,
                                           "data": dict(row.data)}))

    def _hold(self, lkm: str, t_s: float) -> None:
        """A pass read ``lkm``'s pools at ``t_s`` and recorded only the ones that changed
        (decision 63): the others still hold their last level, so each history gets a point
        now, and the lines and the aggregate reach the present."""
        for pool in self.pools_at.get(lkm, ()):
            points = self.pools[pool]
            if points[-1][0] < t_s:
                points.append((t_s, points[-1][1]))

    def _outage(self, event: Event) -> None:
        what = {"target": event.node, "outage": event.get("outage")}
        if event.get("phase") == "start":
            self.outages.append({**what, "start_s": event.t_s, "end_s": None})
            return
        for window in reversed(self.outages):
            if window["end_s"] is None and {k: window[k] for k in what} == what:
                window["end_s"] = event.t_s
                return

    def since(self, seq: int) -> dict[str, Any]:
        """A snapshot: the latest level of every pool and link, their recent history, the
        events after ``seq``, counts, and the outage timeline."""
        pools = {pool: list(points) for pool, points in sorted(self.pools.items())}
        snapshot: dict[str, Any] = {
            "seq": self.seq, "now_s": self.now_s, "counts": dict(sorted(self.counts.items())),
            "links": {link: {"history": list(points), "state": self.link_states.get(link)}
                      for link, points in sorted(self.links.items())},
            "events": [event for number, event in self.events if number > seq],
            "outages": self.outages[-50:],
            "pool_count": len(pools),
        }
        if len(pools) <= MAX_POOL_LINES:
            snapshot["pools"] = pools
        else:
            snapshot["pools"] = {}
            snapshot["aggregate"] = self._aggregate()
        return snapshot

    def _aggregate(self) -> list[dict[str, float]]:
        """Lowest, median and highest pool level at each sampling time of the last ones."""
        at: dict[float, list[float]] = {}
        for points in self.pools.values():
            for t_s, value in points:
                at.setdefault(t_s, []).append(value)
        return [{"t_s": t, "min": min(v), "median": statistics.median(v), "max": max(v)}
                for t, v in sorted(at.items())[-HISTORY:]]
