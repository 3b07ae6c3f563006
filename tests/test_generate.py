"""Generated scenarios: the shipped city is the generator's, and the national backbone holds to
its sources, is one connected network, and runs end to end."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import networkx as nx
import yaml

from nodes.run.generate import BACKBONE_HOP_KM, backbone, city
from nodes.run.harness import run
from nodes.run.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent


def graph(data: dict) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(km["id"] for km in data["kms"])
    g.add_edges_from((link["a"], link["b"], {"km": link["length_km"]}) for link in data["links"])
    return g


def test_the_shipped_city_is_what_the_generator_writes() -> None:
    shipped = yaml.safe_load((ROOT / "scenarios/city.yaml").read_text())
    assert shipped == city()


def test_the_backbone_holds_to_its_sources_and_is_one_network() -> None:
    data = backbone()
    assert data == backbone()  # the same arguments, the same scenario
    g = graph(data)
    assert g.number_of_nodes() == 320 and nx.is_connected(g)  # 40 + 40 metros x 7
    trunk = [link["length_km"] for link in data["links"]
             if link["a"].startswith("BB") and link["b"].startswith("BB")]
    # Beijing-Shanghai: 2,032 km over 32 trusted nodes, 63 km a hop (Chen et al. 2021)
    assert all(BACKBONE_HOP_KM[0] <= km <= BACKBONE_HOP_KM[1] for km in trunk)
    assert 55 <= statistics.mean(trunk) <= 72, statistics.mean(trunk)
    metro = [link["length_km"] for link in data["links"] if not link["a"].startswith("BB")]
    assert max(metro) <= 20  # the Hefei metro network's links: a few km to about 20
    assert {link["params"]["alpha_db_per_km"] for link in data["links"]} == {0.2, 0.3}
    homes = {lkm["km"] for lkm in data["lkms"]}
    assert not any(km.startswith("BB") for km in homes)  # backbone nodes only relay
    lkm_km = {lkm["id"]: lkm["km"] for lkm in data["lkms"]}
    home = {sae["id"]: lkm_km[sae["lkm"]] for sae in data["saes"]}
    local = sum(home[t["from"]][:4] == home[t["to"]][:4] for t in data["traffic"])
    assert 0.75 <= local / len(data["traffic"]) <= 0.85  # local_share 0.8 (and a few by chance)
    hops = [nx.shortest_path_length(g, home[t["from"]], home[t["to"]]) for t in data["traffic"]]
    assert statistics.mean(hops) < 5 < max(hops)  # short paths mostly, long ones across
    parse_scenario(data)  # a valid scenario


async def test_a_40_km_backbone_runs_and_relays_over_trusted_backbone_nodes(tmp_path) -> None:
    data = backbone(backbone_kms=5, metros=5, metro_kms=7, lkms=20, users=200, duration="6h",
                    local_share=0.5)
    assert len(data["kms"]) == 40
    outcome = await run(parse_scenario(data), tmp_path)
    assert outcome.exit_code == 0, (tmp_path / "summary.txt").read_text()
    relays = [json.loads(line)["data"] for line in open(tmp_path / "events.jsonl")
              if '"kind":"relay"' in line]
    across = [r for r in relays if "BB" in r.get("trusted", "")]
    assert across and max(r["hops"] for r in across) >= 4, relays[:5]


def test_the_cli_names_a_bad_size_and_exits_2() -> None:
    out = subprocess.run([sys.executable, "-m", "nodes.run.generate", "backbone", "--kms", "4",
                          "--metros", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "metros <= backbone_kms" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    ok = subprocess.run([sys.executable, "-m", "nodes.run.generate", "backbone", "--kms", "6",
                         "--metros", "3", "--lkms", "12", "--users", "50"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and len(yaml.safe_load(ok.stdout)["kms"]) == 27
