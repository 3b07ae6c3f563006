"""Link figures: buffers and utilisation of a run's links (``plots/links.png``), the links
table of the summaries, and rate and QBER against distance (``run_scenario.py linkrate``).

Drawn the way report.py draws (Figure objects, default style, fixed size, no metadata), from
the recorded ``link_buffer_bits`` samples and each link's books (summary.json ``links``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nodes.run.expect import LINK_BUFFER_BITS
from nodes.run.report import join_cells, note, shade_outages
from simulator import Recorder, format_duration

OutageWindow = tuple[float, float, str]
HOUR_S = 3600.0
FIGSIZE_IN = (11.0, 8.0)
DPI = 100


MAX_LINK_LINES = 8  # beyond this, the most used links as lines and the rest as a band
MAX_LINK_BARS = 30


def plot_links(recorder: Recorder, links: list[dict[str, Any]], title: str,
               windows: list[OutageWindow]) -> Figure:
    """Top: each link's buffer fill (% of its capacity) over time, from the sampled levels;
    with many links, the most used ones as lines and the lowest and median fill of all links
    as a band. Bottom: utilisation per link ((relayed + overhead) / generated), most used
    first, with the share of time each buffer held less than one key."""
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 2))
    ranked = sorted(links, key=lambda ln: (-(ln["utilisation"] or 0.0), ln["link"]))
    capacity = {ln["link"]: ln["buffer_bits"] for ln in links}
    fills: dict[str, tuple[list[float], list[float]]] = {}
    for link in ranked:
        series = recorder.series(link["link"], LINK_BUFFER_BITS)
        fills[link["link"]] = ([t / HOUR_S for t, _ in series],
                               [100.0 * v / capacity[link["link"]] for _, v in series])
    shown = [ln["link"] for ln in ranked[:MAX_LINK_LINES]]
    if len(ranked) > MAX_LINK_LINES:
        _draw_fill_band(top, fills)
    for name in shown:
        top.plot(*fills[name], lw=1.3, drawstyle="steps-post", label=name)
    shade_outages(top, windows)
    top.set_title(f"{title}: link buffers")
    top.set_xlabel("simulated time (h)")
    top.set_ylabel("buffer fill (% of capacity)")
    top.set_ylim(0, 105)
    top.set_xlim(left=0)
    top.grid(alpha=0.3)
    if not links:
        note(top, "no links")
    elif top.get_legend_handles_labels()[0]:
        more = len(ranked) - len(shown)
        handles, _ = top.get_legend_handles_labels()
        if more:
            handles.append(Line2D([], [], ls="none", label=f"(+{more} less used links in the band)"))
        top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _draw_utilisation(bottom, ranked)
    return figure


def _draw_fill_band(ax: Axes, fills: dict[str, tuple[list[float], list[float]]]) -> None:
    at: dict[float, list[float]] = {}
    for hours, values in fills.values():
        for h, v in zip(hours, values):
            at.setdefault(h, []).append(v)
    times = sorted(at)
    low = [min(at[t]) for t in times]
    high = [max(at[t]) for t in times]
    ax.fill_between(times, low, high, step="post", color="tab:gray", alpha=0.25, lw=0,
                    label=f"range of all {len(fills)} links")
    ax.plot(times, [statistics.median(at[t]) for t in times], c="black", lw=1.4,
            drawstyle="steps-post", label="median of all links")


def _draw_utilisation(ax: Axes, ranked: list[dict[str, Any]]) -> None:
    bars = ranked[:MAX_LINK_BARS]
    names = [ln["link"] for ln in bars]
    relayed = [100.0 * ln["relayed_bits"] / ln["generated_bits"] if ln["generated_bits"] else 0.0
               for ln in bars]
    overhead = [100.0 * ln["overhead_bits"] / ln["generated_bits"] if ln["generated_bits"]
                else 0.0 for ln in bars]
    x = list(range(len(bars)))
    ax.bar(x, relayed, color="tab:blue", label="relayed")
    ax.bar(x, overhead, bottom=relayed, color="tab:orange", label="authentication")
    duration = max([sum(ln["time_in_state_s"].values()) for ln in bars] or [0.0])
    for i, link in enumerate(bars):
        if duration and link["time_empty_s"] >= 0.005 * duration:
            share = 100.0 * link["time_empty_s"] / duration
            ax.text(i, relayed[i] + overhead[i] + 1, f"empty {share:.0f}%", rotation=90,
                    ha="center", va="bottom", fontsize=7, color="tab:red")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7 if len(bars) > 12 else 9)
    ax.set_ylabel("utilisation (% of generated)")
    ax.set_ylim(0, 119)
    ax.grid(alpha=0.3, axis="y")
    rest = len(ranked) - len(bars)
    title = "link utilisation, most used first"
    ax.set_title(title + (f" ({rest} less used links not shown)" if rest else ""), fontsize=10)
    if bars:
        ax.legend(loc="upper right", fontsize=8)
    else:
        note(ax, "no links")


def format_links_table(links: list[dict[str, Any]]) -> str:
    """Each link's books as a fixed-width table (bits in Mbit)."""
    header = ("link", "model", "km", "generated Mb", "relayed Mb", "overhead Mb",
              "discarded Mb", "utilisation", "time empty", "QBER")
    rows = [header]
    for ln in links:
        util = ln["utilisation"]
        rows.append((
            ln["link"], ln["model"], "-" if ln["length_km"] is None else f"{ln['length_km']:g}",
            *(f"{ln[k] / 1e6:.3f}" for k in ("generated_bits", "relayed_bits", "overhead_bits",
                                             "discarded_bits")),
            "-" if util is None else f"{100 * util:.1f}%",
            format_duration(round(ln["time_empty_s"])) if ln["time_empty_s"] >= 1 else
            ("<1s" if ln["time_empty_s"] else "-"),
            "-" if ln["qber"] is None else f"{100 * ln['qber']:.2f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [join_cells(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "links\n" + "\n".join(lines) + "\n"


# -- rate and QBER against distance (run_scenario.py linkrate) -------------------------------

RATE_FIGSIZE_IN = (11.0, 6.5)
RATE_FLOOR_BPS = 0.1  # the log axis starts here; a rate falling to 0 leaves through the bottom
QBER_TOP_PERCENT = 25.0  # well above the abort threshold; far past a cutoff QBER goes to 50 %


@dataclass(frozen=True, slots=True)
class RateCurve:
    """One model's rate and QBER sampled against distance, its cutoff, and the published
    (distance km, bit/s) points it is calibrated to."""

    label: str
    km: list[float]
    rate_bps: list[float]
    qber: list[float]
    cutoff_km: float
    published: list[tuple[float, float]] = field(default_factory=list)
    abort_qber: float | None = None


def plot_rate_vs_distance(curves: list[RateCurve], title: str, max_km: float) -> Figure:
    """Secret key rate (log, left axis, solid) and QBER (right axis, dashed) against distance,
    one colour per curve; each cutoff a dotted vertical line, published rates as markers."""
    figure = Figure(figsize=RATE_FIGSIZE_IN, dpi=DPI, layout="constrained")
    rate_ax = figure.subplots()
    qber_ax = rate_ax.twinx()
    top = RATE_FLOOR_BPS
    for i, curve in enumerate(curves):
        colour = f"C{i % 10}"
        shown = [r if r > 0 else RATE_FLOOR_BPS / 10 if j and curve.rate_bps[j - 1] > 0
                 else math.nan for j, r in enumerate(curve.rate_bps)]  # a drop to 0 leaves
        top = max([top, *(r for r in curve.rate_bps if r > 0)])
        cut = f"cutoff {curve.cutoff_km:.0f} km" if math.isfinite(curve.cutoff_km) else "no cutoff"
        rate_ax.plot(curve.km, shown, c=colour, lw=1.8, label=f"{curve.label} ({cut})")
        qber_ax.plot(curve.km, [100 * q for q in curve.qber], c=colour, lw=1.0, ls="--",
                     alpha=0.8)
        if 0 < curve.cutoff_km <= max_km:
            rate_ax.axvline(curve.cutoff_km, c=colour, lw=1.0, ls=":")
        if curve.published:
            rate_ax.plot(*zip(*curve.published), ls="none", marker="o", ms=8, mfc=colour,
                         mec="black", mew=1.2, zorder=5)
    for abort in sorted({c.abort_qber for c in curves if c.abort_qber is not None}):
        qber_ax.axhline(100 * abort, c="dimgray", lw=1.0, ls="-.")
    rate_ax.set_yscale("log")
    rate_ax.set_ylim(RATE_FLOOR_BPS, 10 ** math.ceil(math.log10(top) + 0.01))
    rate_ax.set_xlim(0, max_km)
    qber_ax.set_ylim(0, QBER_TOP_PERCENT)
    rate_ax.set_title(title)
    rate_ax.set_xlabel("distance (km of fibre)")
    rate_ax.set_ylabel("secret key rate (bit/s, log scale)")
    qber_ax.set_ylabel("QBER (%)")
    rate_ax.grid(alpha=0.3, which="both")
    handles, _ = rate_ax.get_legend_handles_labels()
    handles += [Line2D([], [], c="black", lw=1.0, ls="--", label="QBER (right axis)"),
                Line2D([], [], c="black", lw=1.0, ls=":", label="cutoff: no key beyond")]
    aborts = sorted({f"{100 * c.abort_qber:g} %" for c in curves if c.abort_qber is not None})
    if aborts:
        handles.append(Line2D([], [], c="dimgray", lw=1.0, ls="-.",
                              label=f"abort QBER ({', '.join(aborts)})"))
    if any(c.published for c in curves):
        handles.append(Line2D([], [], ls="none", marker="o", ms=8, mfc="white", mec="black",
                              mew=1.2, label="published rate (calibration point)"))
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    return figure


def write_rate_figure(curves: list[RateCurve], title: str, max_km: float, path: Path) -> None:
    """Draw :func:`plot_rate_vs_distance` to ``path`` (same curves, same PNG bytes)."""
    with matplotlib.style.context("default"):
        figure = plot_rate_vs_distance(curves, title, max_km)
        figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def write_policy_figure(table: dict[str, dict[str, Any]], title: str, path: Any) -> None:
    """Failed sends, mean relay delay and utilisation spread per routing policy, side by
    side (``python -m nodes.run.routing_compare``)."""
    from matplotlib.style import context

    panels = (("failed_sends", "failed sends"), ("mean_relay_delay_ms", "mean relay delay (ms)"),
              ("utilisation_spread", "utilisation spread (max - min)"),
              ("keys_seen_by_trusted_nodes", "keys seen by trusted KMs"))
    with context("default"):
        figure = Figure(figsize=(11.0, 3.6), dpi=DPI, layout="constrained")
        policies = list(table)
        for ax, (key, label) in zip(figure.subplots(1, len(panels)), panels):
            values = [table[p][key] or 0 for p in policies]
            ax.bar(policies, values, color=["tab:gray", "tab:blue", "tab:green"][:len(values)])
            ax.set_title(label, fontsize=10)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(alpha=0.3, axis="y")
            for i, value in enumerate(values):
                ax.text(i, value, f"{value:g}", ha="center", va="bottom", fontsize=8)
        figure.suptitle(f"{title}: routing policies compared")
        figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
