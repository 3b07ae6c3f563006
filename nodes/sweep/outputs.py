"""A sweep's own outputs: ``sweep.csv`` (tidy, one row per run), one plot per collected figure
and varied parameter (the mean over the seeds with its 95 % interval, one line per combination
of the other parameters), and ``report.html`` with the table of means and the plots.

The interval is Student's t: mean +- t(0.975, n-1) * s / sqrt(n) over the seeds of a variant
(none for a single seed). Only runs that completed count (status ok or expectations_failed).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from nodes.sweep.spec import Sweep  # noqa: E402
from nodes.sweep.task import COMPLETE  # noqa: E402
from simulator import format_float, parse_duration  # noqa: E402

MAX_LINES = 8  # past this many combinations of the other parameters, they are pooled
#: t(0.975, df) for df = 1..30 (beyond: 1.96)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95 % interval (0 for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    t = T975[len(values) - 2] if len(values) - 1 <= len(T975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def write_outputs(sweep: Sweep, rows: list[dict[str, Any]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = figure_columns(rows)
    write_csv(sweep, rows, columns, out_dir / "sweep.csv")
    names = plotted(sweep, columns, rows)
    plots = write_plots(sweep, rows, names, out_dir / "plots")
    write_report(sweep, rows, names, plots, out_dir / "report.html")


def figure_columns(rows: list[dict[str, Any]]) -> list[str]:
    fixed = {"run_id", "seed", "status", "message"}
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((key, None) for key in row if key not in fixed)
    return list(seen)


def plotted(sweep: Sweep, columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The figures worth a plot: collected ones with a value somewhere (per-reason sync
    columns are in the CSV; their totals are plotted)."""
    names = [c for c in columns if c not in sweep.parameters and not c.startswith("syncs.")]
    return [n for n in names if any(row.get(n) is not None for row in rows)]


def write_csv(sweep: Sweep, rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    for row in rows:  # a completed run that never synced for a reason did so 0 times
        if row["status"] in COMPLETE:
            row.update((c, row.get(c) or 0.0) for c in columns if c.startswith("syncs."))
    header = ["run_id", *sweep.parameters, "seed",
              *[c for c in columns if c not in sweep.parameters], "status", "message"]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(row.get(name)) for name in header])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def write_plots(sweep: Sweep, rows: list[dict[str, Any]], names: list[str], folder: Path
                ) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r["status"] in COMPLETE]
    paths = []
    for name in names:
        for parameter in sweep.parameters:
            figure = _plot(sweep, done, name, parameter)
            path = folder / f"{_stem(name)}__{_stem(parameter)}.png"
            figure.savefig(path, format="png", dpi=110, metadata={"Software": None})
            paths.append(path)
    return paths


def _plot(sweep: Sweep, rows: list[dict[str, Any]], name: str, parameter: str) -> Figure:
    others = [p for p in sweep.parameters if p != parameter]
    values = list(dict.fromkeys(_key(r[parameter]) for r in rows))
    numeric = all(isinstance(k[0], float) for k in values)
    if numeric:
        values.sort(key=lambda k: k[0])
    groups: dict[tuple[Any, ...], dict[Any, list[float]]] = {}
    for row in rows:
        if row.get(name) is None:
            continue
        other = tuple(row[p] for p in others)
        groups.setdefault(other, {}).setdefault(_key(row[parameter]), []).append(row[name])
    if len(groups) > MAX_LINES:  # too many to tell apart: pool the other parameters
        pooled: dict[Any, list[float]] = {}
        for series in groups.values():
            for key, found in series.items():
                pooled.setdefault(key, []).extend(found)
        groups = {("all others pooled",): pooled}
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.add_subplot()
    position = {k: (k[0] if numeric else i) for i, k in enumerate(values)}
    for other, series in sorted(groups.items(), key=lambda item: str(item[0])):
        keys = [k for k in values if k in series]
        stats = [mean_interval(series[k]) for k in keys]
        label = ", ".join(f"{p}={v}" for p, v in zip(others, other)) if others else None
        if other == ("all others pooled",):
            label = "all other parameters pooled"
        ax.errorbar([position[k] for k in keys], [m for m, _ in stats],
                    yerr=[h for _, h in stats], marker="o", capsize=4, label=label)
    if not numeric or any(isinstance(r[parameter], str) for r in rows):  # labels as written
        ax.set_xticks(list(position.values()), [k[1] for k in values])
    ax.set_xlabel(parameter)
    ax.set_ylabel(name)
    seeds = len(sweep.seeds)
    ax.set_title(f"{sweep.name}: {name} (mean and 95 % interval over {seeds} seed"
                 f"{'s' if seeds != 1 else ''})", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0] and others:
        ax.legend(fontsize=7)
    return figure


def _key(value: Any) -> tuple[Any, str]:
    """A parameter value's place on the axis and its label: numbers as numbers, durations
    in seconds, anything else in the order met."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), str(value)
    try:
        return float(parse_duration(str(value))), str(value)
    except ValueError:
        return str(value), str(value)


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_report(sweep: Sweep, rows: list[dict[str, Any]], names: list[str], plots: list[Path],
                 path: Path) -> None:
    """A page with the sweep's table (a row per variant: mean and interval per figure) and its
    plots inlined; it references nothing outside itself."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    variants: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        variants.setdefault(tuple(row[p] for p in sweep.parameters), []).append(row)
    head = "".join(f"<th>{html.escape(p)}</th>" for p in (*sweep.parameters, "runs", *names))
    body = []
    for params, members in variants.items():
        done = [r for r in members if r["status"] in COMPLETE]
        cells = [html.escape(str(v)) for v in params]
        cells.append(f"{len(done)}/{len(members)}" + ("" if len(done) == len(members) else
                     " (" + ", ".join(sorted({r['status'] for r in members
                                             if r['status'] not in COMPLETE})) + ")"))
        for name in names:
            found = [r[name] for r in done if r.get(name) is not None]
            if found:
                mean, half = mean_interval(found)
                cells.append(f"{mean:.4g} &plusmn; {half:.2g}")
            else:
                cells.append("&ndash;")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in plots)
    invalid = [r for r in rows if r["status"] == "invalid"]
    notes = "".join(f"<li>invalid variant {html.escape(_params(sweep, r))}: "
                    f"{html.escape(r['message'])}</li>" for r in invalid[:20])
    text = io.StringIO()
    text.write(f"<!doctype html><html><head><meta charset='utf-8'><title>sweep "
               f"{html.escape(sweep.name)}</title><style>body{{font-family:sans-serif;"
               f"margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;"
               f"padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>")
    text.write(f"<h1>Sweep {html.escape(sweep.name)}</h1><p>{len(rows)} runs: " +
               ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
               f"; seeds {', '.join(map(str, sweep.seeds))}. Each cell: the mean over the "
               "seeds &plusmn; the half-width of its 95 % interval (Student's t).</p>")
    text.write(f"<ul>{notes}</ul><table><tr>{head}</tr>{''.join(body)}</table>{images}")
    text.write("</body></html>\n")
    path.write_text(text.getvalue(), encoding="utf-8")


def _params(sweep: Sweep, row: dict[str, Any]) -> str:
    return ", ".join(f"{p}={row[p]}" for p in sweep.parameters) + f", seed {row['seed']}"
