"""``plots/pools_overview.png``: many pools at a glance, where one line per pool is a wall.

Drawn when a run has more pools than the pool-level plot names in its legend. Three panels on
one time axis (hours):

* the fill of every pool, in % of the highest level it reached, as percentile bands across
  pools (5-95 and 25-75) around the median;
* a heatmap of the mean fill per LKM (rows) over time;
* syncs per hour, stacked by reason, with the ones that did not complete (outcome other than
  ok) on top in black.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from matplotlib.figure import Figure

from nodes.run.report import DPI, HOUR_S, SYNC_STYLE, readings_by_time, shade_outages
from simulator import Recorder

OVERVIEW_SIZE_IN = (11.0, 9.0)
MAX_BAND_POOLS = 2000


def plot_pools_overview(recorder: Recorder, title: str, windows: list[Any]) -> Figure:
    figure = Figure(figsize=OVERVIEW_SIZE_IN, dpi=DPI, layout="constrained")
    bands, heat, syncs = figure.subplots(3, 1, sharex=True,
                                         gridspec_kw={"height_ratios": [3, 3, 2]})
    pools = recorder.nodes_with("pool_keys")
    lkms = sorted({pool.split("/", 1)[0] for pool in pools})
    row_of = {lkm: i for i, lkm in enumerate(lkms)}
    # the bands come from an even sample of the pools (every one up to MAX_BAND_POOLS), so a
    # network of a hundred thousand pools does not hold a float object per reading; the
    # heatmap adds every pool up as it goes. A pool's level holds until its next reading
    # (decision 63), so each column holds every pool read so far, at its latest level.
    step = max(1, math.ceil(len(pools) / MAX_BAND_POOLS))
    top = [max((v for _, v in recorder.series(pool, "pool_keys")), default=0.0) or 1.0
           for pool in pools]
    row = [row_of[pool.split("/", 1)[0]] for pool in pools]
    fills: list[float] = [math.inf] * len(pools)  # inf: not read yet (left out of the lowest)
    sum_now, count_now = [0.0] * len(lkms), [0] * len(lkms)
    times: list[float] = []
    at: dict[float, list[float]] = {}
    sums: list[list[float]] = [[] for _ in lkms]
    counts: list[list[int]] = [[] for _ in lkms]
    lowest: list[float] = []
    for t_s, readings in readings_by_time(recorder, pools, "pool_keys"):
        for index, value in readings:
            fill, before = 100.0 * value / top[index], fills[index]
            if before == math.inf:
                count_now[row[index]] += 1
                before = 0.0
            sum_now[row[index]] += fill - before
            fills[index] = fill
        times.append(t_s)
        at[t_s] = [fills[i] for i in range(0, len(pools), step) if fills[i] != math.inf]
        for lkm_row in range(len(lkms)):
            sums[lkm_row].append(sum_now[lkm_row])
            counts[lkm_row].append(count_now[lkm_row])
        lowest.append(min(fills))
    band_times = [t for t in times if at[t]]
    hours = [t / HOUR_S for t in band_times]
    qs = [statistics.quantiles(at[t], n=20, method="inclusive") if len(at[t]) > 1
          else [at[t][0]] * 19 for t in band_times]
    bands.fill_between(hours, [q[0] for q in qs], [q[18] for q in qs], step="post",
                       color="tab:blue", alpha=0.2, lw=0, label="5-95 % of pools")
    bands.fill_between(hours, [q[4] for q in qs], [q[14] for q in qs], step="post",
                       color="tab:blue", alpha=0.4, lw=0, label="25-75 % of pools")
    bands.plot(hours, [statistics.median(at[t]) for t in band_times], c="tab:blue", lw=1.4,
               drawstyle="steps-post", label="median pool")
    bands.plot([t / HOUR_S for t in times], lowest, c="black", lw=1, ls="--",
               drawstyle="steps-post", label="lowest of all pools")
    bands.set_ylim(0, 105)
    bands.set_ylabel("pool fill (% of its highest)")
    sampled = f" (bands from every {step}th)" if step > 1 else ""
    bands.set_title(f"{title}: {len(pools)} pools at a glance{sampled}")
    bands.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    shade_outages(bands, windows)
    bands.grid(alpha=0.3)

    mean = [[g / c if c else float("nan") for g, c in zip(grow, crow)]
            for grow, crow in zip(sums, counts)]
    end_h = (times[-1] / HOUR_S) if times else 1.0
    image = heat.imshow(mean, aspect="auto", interpolation="nearest", cmap="viridis",
                        vmin=0, vmax=100, extent=(0, max(end_h, 1e-9), len(lkms), 0))
    heat.set_yticks([i + 0.5 for i in range(len(lkms))] if len(lkms) <= 30 else [])
    heat.set_yticklabels(lkms if len(lkms) <= 30 else [])
    heat.set_ylabel(f"LKM ({len(lkms)})")
    figure.colorbar(image, ax=heat, label="mean fill (%)")

    hours_n = int(recorder.last_t_s() // HOUR_S) + 1
    per_hour: dict[str, list[float]] = {}  # reason, or "not completed" -> syncs per hour
    for event in recorder.iter_events("sync"):
        key = str(event.get("reason")) if event.get("outcome") == "ok" else "not completed"
        per_hour.setdefault(key, [0.0] * hours_n)[min(int(event.t_s // HOUR_S), hours_n - 1)] += 1
    bottom = [0.0] * hours_n
    for reason, (colour, _) in SYNC_STYLE.items():
        if reason in per_hour:
            ok = per_hour[reason]
            syncs.bar(range(hours_n), ok, bottom=bottom, width=1.0, align="edge",
                      color=colour, label=f"{reason} ok")
            bottom = [b + o for b, o in zip(bottom, ok)]
    if (failed := per_hour.get("not completed")) is not None:
        syncs.bar(range(hours_n), failed, bottom=bottom, width=1.0, align="edge",
                  color="black", label="not completed")
    syncs.set_ylabel("syncs / h")
    syncs.set_xlabel("simulated time (h)")
    syncs.set_xlim(0, max(end_h, hours_n))
    if syncs.get_legend_handles_labels()[0]:
        syncs.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    syncs.grid(alpha=0.3)
    return figure
