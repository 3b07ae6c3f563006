"""How a scenario would split into regions for a partitioned run (issue 19's first part).

``python -m nodes.run.regions SCENARIO --partitions N`` prints each region's KMs, LKMs and
users, the cut links with their hop delays, and the lookahead; a split whose cut links take no
time is refused (exit 2) with the links named. The split itself is
:func:`nodes.network.plan_partitions`; here a scenario gives it the KM graph and each link's hop
delay: its fibre's propagation (``length_km`` x 5 us/km) plus ``hop_processing``, the least a
relay message takes to cross it (added latency from outages only ever adds to that). Mail
between users of different regions is the other thing that crosses, so ``mail_delay`` must be
at least the lookahead too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nodes.network import NoLookahead, Plan, edge_key, km_graph, least_hop_delay_s, plan_partitions
from nodes.run.scenario import MailTraffic, Scenario, ScenarioError, load_scenario


def hop_delays(scenario: Scenario) -> dict[tuple[str, str], float]:
    """Each link's least hop delay: propagation over its length plus a KM's processing."""
    return {edge_key(link.a, link.b):
            least_hop_delay_s(link.length_km or 0.0, scenario.hop_processing_s)
            for link in scenario.links}


def plan_for(scenario: Scenario, partitions: int) -> Plan:
    """The regions of ``scenario`` for ``partitions`` (seeded by the scenario's seed);
    ScenarioError naming ``partitions`` when the split is impossible or has no lookahead, or
    naming ``mail_delay`` when mail between regions would arrive sooner than the lookahead."""
    graph = km_graph([km.id for km in scenario.kms], [(ln.a, ln.b) for ln in scenario.links])
    try:
        plan = plan_partitions(graph, hop_delays(scenario), partitions, scenario.seed)
    except (NoLookahead, ValueError) as error:
        raise ScenarioError([f"partitions: {error}"]) from None
    crossing = mail_between_regions(scenario, plan)
    if crossing and scenario.mail_delay_s < plan.lookahead_s:
        raise ScenarioError([
            f"mail_delay: {crossing} flow(s) send mail between regions, which must take at "
            f"least the lookahead ({plan.lookahead_s * 1e3:.3f} ms), not "
            f"{scenario.mail_delay_s * 1e3:.3f} ms; set mail_delay to at least that"])
    return plan


def mail_between_regions(scenario: Scenario, plan: Plan) -> int:
    """How many traffic flows join users in different regions."""
    where = plan.region_of()
    km_of = {lkm.id: lkm.km for lkm in scenario.lkms}
    region = {sae.id: where[km_of[sae.lkm]] for sae in scenario.saes}
    return sum(1 for flow in scenario.traffic if isinstance(flow, MailTraffic)
               and region.get(flow.from_sae) != region.get(flow.to_sae))


def describe(scenario: Scenario, plan: Plan) -> str:
    where = plan.region_of()
    lkms: dict[int, list[str]] = {}
    for lkm in scenario.lkms:
        lkms.setdefault(where[lkm.km], []).append(lkm.id)
    home = {lkm.id: where[lkm.km] for lkm in scenario.lkms}
    users: dict[int, int] = {}
    for sae in scenario.saes:
        users[home[sae.lkm]] = users.get(home[sae.lkm], 0) + 1
    lines = [f"{scenario.name}: {len(plan.regions)} region(s), {len(plan.cut)} cut link(s) "
             f"of {len(scenario.links)}, lookahead {plan.lookahead_s * 1e3:.3f} ms"]
    for index, kms in enumerate(plan.regions):
        shown = ", ".join(kms[:8]) + (", ..." if len(kms) > 8 else "")
        lines.append(f"  region {index}: {len(kms)} KMs, {len(lkms.get(index, []))} LKMs, "
                     f"{users.get(index, 0)} users  ({shown})")
    for (a, b), delay in plan.cut:
        lines.append(f"  cut {a}-{b}: {delay * 1e3:.3f} ms (region {where[a]} - {where[b]})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.run.regions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--partitions", type=int, required=True, help="how many regions")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        plan = plan_for(scenario, args.partitions)
    except ScenarioError as error:
        print(f"invalid scenario {args.scenario}:", file=sys.stderr)
        for line in error.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    print(describe(scenario, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
