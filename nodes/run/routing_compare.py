"""Run one scenario under each routing policy and compare: ``python -m nodes.run.routing_compare
SCENARIO.yaml [--out DIR] [--until DURATION]``.

Writes ``DIR/<policy>/`` (each run's usual outputs), ``DIR/routing_compare.json`` and
``DIR/routing_compare.png``, and prints the table: failed sends, the mean relay delay of slice
top-ups (from the sync events), the spread of link utilisation (max - min over links), and the
keys trusted nodes saw (exposure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from nodes.network import ROUTING_POLICIES
from nodes.run.harness import RunOutcome, run
from nodes.run.scenario import ScenarioError, load_scenario


def figures(outcome: RunOutcome) -> dict[str, Any]:
    """The comparison's figures of one run, from its summary and events."""
    events = [json.loads(line) for line in
              (outcome.out_dir / "events.jsonl").read_text().splitlines()]
    delays = [e["data"]["delay_s"] for e in events if e["kind"] == "relay"]
    utilisation = [link["utilisation"] or 0.0 for link in outcome.summary["links"]]
    seen = sum(pair["keys"] for pairs in outcome.summary["exposure"].values()
               for pair in pairs.values())
    return {
        "failed_sends": outcome.summary["totals"]["failed_sends"],
        "mean_relay_delay_ms": round(1000 * statistics.fmean(delays), 3)
        if delays else None,
        "utilisation_spread": round(max(utilisation) - min(utilisation), 4)
        if utilisation else None,
        "utilisation_max": round(max(utilisation), 4) if utilisation else None,
        "keys_seen_by_trusted_nodes": seen,
        "mails_delivered": outcome.summary["audit"].get("mails_received", 0),
    }


async def compare(path: Path, out: Path, until: str | None = None) -> dict[str, dict[str, Any]]:
    base = load_scenario(path).with_overrides(duration_s=until)
    table = {}
    for policy in ROUTING_POLICIES:
        scenario = base.model_copy(update={"routing": policy})
        table[policy] = figures(await run(scenario, out / policy))
    return table


def format_table(table: dict[str, dict[str, Any]]) -> str:
    header = ("routing", "failed sends", "mean relay delay ms", "utilisation spread",
              "max utilisation", "keys seen by trusted KMs", "mails delivered")
    keys = ("failed_sends", "mean_relay_delay_ms", "utilisation_spread", "utilisation_max",
            "keys_seen_by_trusted_nodes", "mails_delivered")
    rows = [header] + [(policy, *(str(row[k]) for k in keys)) for policy, row in table.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.run.routing_compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, help="default results/<name>-routing")
    parser.add_argument("--until", help="override the scenario's duration, e.g. 1d")
    args = parser.parse_args(argv)
    try:
        name = load_scenario(args.scenario).name
        out = args.out or Path("results") / f"{name}-routing"
        table = asyncio.run(compare(args.scenario, out, args.until))
    except ScenarioError as error:
        print(f"invalid scenario {args.scenario}:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    from nodes.run.linkplots import write_policy_figure

    (out / "routing_compare.json").write_text(json.dumps(table, indent=2) + "\n")
    write_policy_figure(table, name, out / "routing_compare.png")
    print(format_table(table))
    print(f"results in {out}/ (routing_compare.json, routing_compare.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
