"""``report.html``: one run on one page that opens offline in any browser.

The page holds the summary, the expectations with their figures, the audit, the links and
exposure tables, every plot (inlined as PNG data) and the scenario as run: nothing is fetched
from anywhere, so the file can be mailed, archived or attached to a CI run.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from nodes.run.linkplots import format_links_table
from nodes.run.report import format_exposure_table, format_summary_table

VERDICTS = {True: "PASS", False: "FAIL", None: "SKIP"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; }
.PASS { color: #176f2c; font-weight: bold; } .FAIL { color: #b00020; font-weight: bold; }
.SKIP { color: #8a6d00; font-weight: bold; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
"""


def write_html(out_dir: Path, summary: dict[str, Any], notes: Sequence[str]) -> Path:
    """Write ``out_dir/report.html`` from the run's summary (its ``expectations`` among it),
    the lines printed above the verdicts (``notes``: replay, audit, failures) and the files
    beside it (plots, scenario.yaml)."""
    esc = html.escape
    verdicts = [(VERDICTS[e["passed"]], e) for e in summary.get("expectations", [])]
    rows = "".join(f'<tr><td class="{v}">{v}</td><td>{esc(e["name"])}</td>'
                   f'<td>{esc(e["figure"])}</td></tr>' for v, e in verdicts)
    failed = sum(1 for v, _ in verdicts if v == "FAIL")
    verdict = "every expectation held" if not failed else f"{failed} expectation(s) failed"
    parts = [
        f"<h1>{esc(summary['scenario'])}: {esc(verdict)}</h1>",
        f"<p>seed {summary.get('seed')}, {summary.get('simulated_s', 0):,.0f} s simulated, "
        f"{summary.get('steps', 0):,} clock steps</p>",
        "<h2>Expectations</h2>",
        f"<table><tr><th>verdict</th><th>expectation</th><th>figure</th></tr>{rows}</table>"
        if rows else "<p>none</p>",
        *(f"<p>{esc(line)}</p>" for line in notes),
        "<h2>Nodes</h2>", f"<pre>{esc(format_summary_table(summary))}</pre>",
    ]
    if summary.get("links"):
        parts += ["<h2>Links</h2>", f"<pre>{esc(format_links_table(summary['links']))}</pre>"]
    if summary.get("exposure"):
        parts += ["<h2>What trusted KMs saw</h2>",
                  f"<pre>{esc(format_exposure_table(summary))}</pre>"]
    parts.append("<h2>Plots</h2>")
    for plot in sorted((out_dir / "plots").glob("*.png")):
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(f'<p>{esc(plot.name)}</p><img alt="{esc(plot.stem)}" '
                     f'src="data:image/png;base64,{data}">')
    scenario = out_dir / "scenario.yaml"
    if scenario.is_file():
        parts += ["<h2>The scenario as run</h2>", f"<pre>{esc(scenario.read_text())}</pre>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(summary['scenario'])}: qkdsim report</title><style>{STYLE}</style>"
            "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
