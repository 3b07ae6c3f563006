"""The run report: pool-level and delivery plots plus a summary, drawn from recorded rows only.

With linkplots.py (the link figures, drawn with this module's helpers), the only module that
imports matplotlib. Figures are built as `Figure` objects (no pyplot
state), under matplotlib's default style (a user's matplotlibrc cannot change them), with a
fixed size and dpi and no "Software" metadata, so the same rows give the same PNG bytes.
Event kinds and metric names are those of expect.py's data contract.
"""

from __future__ import annotations

import heapq
import itertools
import json
import statistics
import textwrap
from bisect import bisect_left
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.style  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from simulator import Event, Recorder, merge_counts  # noqa: E402

OutageWindow = tuple[float, float, str]

FIGSIZE_IN = (11.0, 5.5)
DPI = 150  # fit for a paper
HOUR_S = 3600.0
SYNC_STYLE = {  # reason -> (colour, marker)
    "scheduled": ("tab:blue", "o"),
    "threshold": ("tab:orange", "v"),
    "emergency": ("tab:red", "X"),
    "manual": ("tab:green", "s"),
    "retry": ("tab:purple", "P"),
}
OTHER_SYNC_STYLE = ("tab:gray", "D")
MAX_POOL_LEGEND = 12
SLICE_CAPTION = (
    "LKM/SAE is that SAE's pool at that LKM: at the SAE's home LKM its home pool, elsewhere a "
    "slice, keys reserved from the home pool and relayed ahead so that senders there are served "
    "while the network is down. A slice starts at its slice size, filled over the link at "
    "start-up, and is topped up by syncs like any pool.")
MAX_POOL_LINES = 40  # beyond this, the lowest and median of all pools (see _draw_envelope)


def write_report(
    recorder: Recorder,
    scenario_name: str,
    out_dir: Path | str,
    outage_windows: list[OutageWindow] | None = None,
    links: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write plots/pool_levels.png, plots/deliveries.png, summary.json and summary.txt; with
    `links` (each link's books), also plots/links.png, and the books in both summaries.

    `outage_windows` are `(start_s, end_s, label)`; None derives them from the outage events.
    Returns the written paths.
    """
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    windows = outage_windows_from_events(recorder) if outage_windows is None else outage_windows
    summary = summarise(recorder, scenario_name)
    paths = [out / "plots" / "pool_levels.png", out / "plots" / "deliveries.png"]
    from nodes.run import linkplots  # it draws with this module's helpers

    with matplotlib.style.context("default"):
        _save(plot_pool_levels(recorder, scenario_name, windows), paths[0])
        _save(plot_deliveries(recorder, scenario_name, windows), paths[1])
        if links is not None:
            paths.append(out / "plots" / "links.png")
            _save(linkplots.plot_links(recorder, links, scenario_name, windows), paths[-1])
        if len(recorder.nodes_with("pool_keys")) > MAX_POOL_LEGEND:
            from nodes.run.poolplots import plot_pools_overview

            paths.append(out / "plots" / "pools_overview.png")
            _save(plot_pools_overview(recorder, scenario_name, windows), paths[-1])
    text = format_summary_table(summary) + "\n" + format_exposure_table(summary)
    if links is not None:
        summary["links"] = links
        text += "\n" + linkplots.format_links_table(links)
    paths += [out / "summary.json", out / "summary.txt"]
    paths[-2].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths[-1].write_text(text, encoding="utf-8")
    return paths


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def outage_windows_from_events(recorder: Recorder) -> list[OutageWindow]:
    """Pair outage "start"/"end" events per (target, outage kind); an unended one runs to the
    end of the recording. Labels read "down KM1"."""
    open_at: dict[tuple[str, object], float] = {}
    windows: list[OutageWindow] = []
    for event in recorder.iter_events("outage"):
        key = (event.node, event.get("outage"))
        if event.get("phase") == "start":
            open_at.setdefault(key, event.t_s)
        elif event.get("phase") == "end" and key in open_at:
            windows.append((open_at.pop(key), event.t_s, _window_label(*key)))
    end_s = recorder.last_t_s()
    windows += [(start, end_s, _window_label(*key)) for key, start in open_at.items()]
    return sorted(windows)


def _window_label(node: str, outage: object) -> str:
    return f"{outage} {node}" if outage else node


def plot_pool_levels(recorder: Recorder, title: str, windows: list[OutageWindow]) -> Figure:
    """One step line per pool (metric "pool_keys": a level holds until the next sample), sync
    events as markers by reason at the level the sync saw, outages shaded."""
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    pools = recorder.nodes_with("pool_keys")
    for index, pool in enumerate(pools[:MAX_POOL_LINES]):
        series = recorder.series(pool, "pool_keys")
        label = pool if index < MAX_POOL_LEGEND else "_nolegend_"
        hours, levels = [t / HOUR_S for t, _ in series], [v for _, v in series]
        ax.plot(hours, levels, lw=1.2, drawstyle="steps-post", label=label)
    if len(pools) > MAX_POOL_LINES:
        _draw_envelope(ax, recorder, pools)
    handles = _draw_syncs(ax, recorder)
    shade_outages(ax, windows)
    ax.set_title(f"{title}: pool levels")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("keys available")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if not pools:
        note(ax, "no pool_keys samples recorded")
    pool_handles, _ = ax.get_legend_handles_labels()
    if len(pools) > MAX_POOL_LEGEND:
        drawn = min(len(pools), MAX_POOL_LINES) - MAX_POOL_LEGEND
        text = f"(+{drawn} more pools)" if len(pools) <= MAX_POOL_LINES else \
            f"(+{drawn} more; all {len(pools)} in black)"
        more = Line2D([], [], ls="none", label=text)
        pool_handles.append(more)
    if pool_handles or handles:
        ax.legend(handles=pool_handles + handles, loc="upper left", bbox_to_anchor=(1.01, 1))
    if len({pool.split("/", 1)[0] for pool in pools}) > 1:  # pools at several LKMs: slices
        figure.supxlabel(textwrap.fill(SLICE_CAPTION, 160), fontsize=7.5, color="dimgray",
                         ha="left", x=0.01)
    return figure


def _draw_envelope(ax: Axes, recorder: Recorder, pools: list[str]) -> None:
    """Over many pools, one line per pool is unreadable and slow: the lowest and the median
    level of all pools at each sampling time stand for the ones not drawn (each pool at the
    level of its latest reading: decision 63)."""
    current: dict[int, float] = {}
    times: list[float] = []
    lows: list[float] = []
    medians: list[float] = []
    for t_s, readings in readings_by_time(recorder, pools, "pool_keys"):
        current.update(readings)
        times.append(t_s / HOUR_S)
        lows.append(min(current.values()))
        medians.append(statistics.median(current.values()))
    ax.plot(times, lows, lw=1.6, c="black", ls="--", drawstyle="steps-post",
            label="lowest of all pools")
    ax.plot(times, medians, lw=1.6, c="black", drawstyle="steps-post",
            label="median of all pools")


def readings_by_time(recorder: Recorder, nodes: list[str], metric: str
                     ) -> Iterator[tuple[float, list[tuple[int, float]]]]:
    """The readings of ``metric`` at ``nodes``, grouped by time in time order: ``(t_s,
    [(index in nodes, value), ...])``. A series records a level when it changes and the level
    holds until its next reading (decision 63), so a reader keeps each node's latest."""
    def rows(index: int, node: str) -> Iterator[tuple[float, int, float]]:
        return ((t_s, index, value) for t_s, value in recorder.series(node, metric))

    merged = heapq.merge(*(rows(index, node) for index, node in enumerate(nodes)))
    for t_s, group in itertools.groupby(merged, key=lambda row: row[0]):
        yield t_s, [(index, value) for _, index, value in group]


def _draw_syncs(ax: Axes, recorder: Recorder) -> list[Line2D]:
    """Mark each sync on its pool's line: filled when it completed, hollow when it did not.
    One plot call per (reason, completed) group: a city records tens of thousands of syncs,
    and a Line2D per marker cost more than the whole simulation."""
    groups: dict[tuple[str, bool], tuple[list[float], list[float]]] = {}
    levels: dict[str, tuple[list[float], list[float]]] = {}
    for event in recorder.iter_events("sync"):
        reason, ok = str(event.get("reason")), event.get("outcome") == "ok"
        pool = str(event.get("pool"))
        if pool not in levels:
            series = recorder.series(pool, "pool_keys")
            levels[pool] = ([t for t, _ in series], [v for _, v in series])
        xs, ys = groups.setdefault((reason, ok), ([], []))
        xs.append(event.t_s / HOUR_S)
        ys.append(_level_at(*levels[pool], event.t_s))
    seen = {reason: SYNC_STYLE.get(reason, OTHER_SYNC_STYLE) for reason, _ in groups}
    # the pools' lines take the colour cycle, so a sync is told by its shape, in black; one
    # that did not complete is red, drawn over everything else so nothing hides it
    for (reason, ok), (xs, ys) in sorted(groups.items(), key=lambda item: not item[0][1]):
        marker = seen[reason][1]
        ax.plot(xs, ys, ls="none", marker=marker, ms=6, mec="black" if ok else "red",
                mfc="black" if ok else "none", mew=1.0 if ok else 1.6, zorder=4 if ok else 6)
    handles = [_marker_handle(f"{r} sync", "black", seen[r][1]) for r in _sync_order(seen)]
    if any(not ok for _, ok in groups):
        handles.append(_marker_handle("sync not completed", "red", "o", face="none"))
    return handles


def _sync_order(seen: dict[str, tuple[str, str]]) -> list[str]:
    known = [reason for reason in SYNC_STYLE if reason in seen]
    return known + sorted(reason for reason in seen if reason not in SYNC_STYLE)


def _marker_handle(label: str, colour: str, marker: str, face: str | None = None) -> Line2D:
    face = face or colour
    return Line2D([], [], ls="none", marker=marker, ms=7, mec=colour, mfc=face, label=label)


def _level_at(times: list[float], values: list[float], t_s: float) -> float:
    """Return the level a sync at `t_s` saw: the last sample before it (the first sample if
    none, 0 without samples). Lines are drawn as steps, so the marker sits on its pool's line."""
    if not values:
        return 0.0
    return values[max(bisect_left(times, t_s) - 1, 0)]


def shade_outages(ax: Axes, windows: list[OutageWindow]) -> None:
    for start_s, end_s, label in windows:
        ax.axvspan(start_s / HOUR_S, end_s / HOUR_S, color="tab:gray", alpha=0.2, lw=0, zorder=0)
        ax.text(
            start_s / HOUR_S, 0.98, label, transform=ax.get_xaxis_transform(), zorder=5,
            va="top", ha="left", fontsize=8, color="dimgray", rotation=90,
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1},
        )


def note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def plot_deliveries(recorder: Recorder, title: str, windows: list[OutageWindow]) -> Figure:
    """Keys delivered per hour (events "delivery", data "keys") above failed sends per hour."""
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    hours = int(recorder.last_t_s() // HOUR_S) + 1  # bin h holds [h, h+1) hours
    for ax, totals, colour, label in (
        (top, recorder.per_hour("delivery", hours, "keys"), "tab:blue", "keys delivered / h"),
        (bottom, recorder.per_hour("failure", hours), "tab:red", "failed sends / h"),
    ):
        ax.bar(range(hours), totals, width=1.0, align="edge", color=colour)
        ax.set_ylim(0, max([1.0, *totals]) * 1.1)
        shade_outages(ax, windows)
        ax.set_ylabel(label)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not any(totals):
            note(ax, f"no {label.split(' /')[0]} recorded")
    top.set_title(f"{title}: deliveries and failed sends")
    bottom.set_xlabel("simulated time (h)")
    bottom.set_xlim(0, hours)
    return figure


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def summarise(recorder: Recorder, scenario_name: str) -> dict[str, Any]:
    """Return per-node counts: keys generated (KMs), relayed (KMs, by source), delivered to
    senders and consumed by receivers (LKMs), failed sends (SAEs), syncs by reason and outcome,
    and the lowest pool level; plus totals. JSON-able, nodes sorted."""
    nodes: dict[str, dict[str, Any]] = {}
    for kind, column in COUNTED_KEYS.items():
        for node in recorder.nodes_of(kind):
            row = nodes.setdefault(node, _empty_row())
            row[column] += int(recorder.sum_event_data(kind, "keys", node))
    for node in recorder.nodes_of("failure"):
        nodes.setdefault(node, _empty_row())["failed_sends"] += recorder.count_events("failure",
                                                                                      node)
    seen: dict[str, dict[str, dict[str, int]]] = {}  # trusted KM -> user sites -> keys, bits
    for event in recorder.iter_events("relay"):  # one pass: read back from events.jsonl
        for km in str(event.get("path") or "").split("-"):  # every KM it crossed, trusted too
            if km:
                nodes.setdefault(km, _empty_row())
        _expose(seen, event)
    syncs: dict[str, Counter[tuple[str, str]]] = {}  # node -> (reason, outcome) -> syncs
    for e in recorder.iter_events("sync"):
        syncs.setdefault(e.node, Counter())[(str(e.get("reason")), str(e.get("outcome")))] += 1
    for node, counted in sorted(syncs.items()):
        nodes.setdefault(node, _empty_row())["syncs"] = merge_counts(counted.elements())
    for pool in recorder.nodes_with("pool_keys"):
        low = min(value for _, value in recorder.series(pool, "pool_keys"))
        nodes.setdefault(pool, _empty_row())["min_pool_keys"] = low
    totals = {
        **{column: sum(row[column] for row in nodes.values()) for column in KEY_COLUMNS},
        "failed_sends": sum(row["failed_sends"] for row in nodes.values()),
        "syncs": merge_counts(pair for counted in syncs.values() for pair in counted.elements()),
    }
    replayed = {}
    if requests := recorder.count_events("replay"):  # how faithful a replay was
        differs = int(recorder.sum_event_data("replay", "differs"))
        replayed = {"replay": {"requests": requests, "same_status": requests - differs,
                               "different_status": differs}}
    return {"scenario": scenario_name, "nodes": dict(sorted(nodes.items())), "totals": totals,
            "exposure": {km: dict(sorted(pairs.items())) for km, pairs in sorted(seen.items())},
            **replayed}


def _expose(seen: dict[str, dict[str, dict[str, int]]], relay: Event) -> None:
    """Add what each trusted KM saw in the clear while relaying: per KM, per pair of user
    sites (the two LKMs a relay joined, "LKM_A<->LKM_B"), the keys and bits (from ``relay``
    events' ``trusted`` and ``sites``)."""
    trusted, sites = relay.get("trusted"), relay.get("sites")
    if not isinstance(trusted, str) or not isinstance(sites, str):
        return
    pair = "<->".join(sorted(sites.split(">")))
    for km in trusted.split("-"):
        row = seen.setdefault(km, {}).setdefault(pair, {"keys": 0, "bits": 0})
        row["keys"] += int(_number(relay.get("keys")))
        row["bits"] += int(_number(relay.get("bits")))


def format_exposure_table(summary: dict[str, Any]) -> str:
    """Trusted-node exposure as text: one row per KM and pair of user sites."""
    rows = [("trusted KM", "user sites", "keys seen", "bits seen")]
    for km, pairs in summary.get("exposure", {}).items():
        rows += [(km, pair, f"{seen['keys']:,}", f"{seen['bits']:,}")
                 for pair, seen in pairs.items()]
    if len(rows) == 1:
        return "exposure: no key was relayed through a trusted node\n"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [join_cells(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "exposure (keys trusted nodes saw in the clear while relaying)\n" + \
        "\n".join(lines) + "\n"


COUNTED_KEYS = {"generate": "keys_generated", "relay": "keys_relayed",
                "delivery": "keys_delivered", "consumed": "keys_consumed"}
KEY_COLUMNS = tuple(COUNTED_KEYS.values())


def _empty_row() -> dict[str, Any]:
    return {**{column: 0 for column in KEY_COLUMNS}, "failed_sends": 0, "syncs": {},
            "min_pool_keys": None}


def format_summary_table(summary: dict[str, Any]) -> str:
    """Return the summary as a fixed-width text table, one row per node and a total row.

    Syncs read "threshold 3/4": 3 completed (outcome ok) out of 4 attempts.
    """
    header = ("node", "generated", "relayed", "delivered", "consumed", "failed sends",
              "syncs ok/attempts", "min pool keys")
    rows = [_table_row(node, data) for node, data in summary["nodes"].items()]
    total = _table_row("TOTAL", {**summary["totals"], "min_pool_keys": None}, zero="0")
    widths = [max(len(row[i]) for row in [header, *rows, total]) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    lines = [join_cells(header, widths), rule, *(join_cells(row, widths) for row in rows), rule]
    lines.append(join_cells(total, widths))
    return f"{summary['scenario']}\n" + "\n".join(lines) + "\n"


def _table_row(node: str, data: dict[str, Any], zero: str = "-") -> tuple[str, ...]:
    sync_text = ", ".join(
        f"{reason} {outcomes.get('ok', 0)}/{sum(outcomes.values())}"
        for reason, outcomes in data["syncs"].items()
    )
    low = data["min_pool_keys"]
    return (
        node,
        *(str(data[column] or zero) for column in KEY_COLUMNS),
        str(data["failed_sends"] or zero),
        sync_text or "-",
        "-" if low is None else f"{low:g}",
    )


def join_cells(cells: tuple[str, ...], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
    return "  ".join([first, *rest]).rstrip()
