"""Splitting a scenario into regions for a partitioned run: balanced regions, few cut links,
the lookahead they allow, and a split with no lookahead refused."""

from __future__ import annotations

import pytest
import yaml

from nodes.network import cut_links
from nodes.run.generate import city
from nodes.run.regions import main, plan_for
from nodes.run.scenario import ScenarioError, parse_scenario


def forty(mail_delay: str = "1s") -> dict:
    return {**city(kms=40, lkms=40, users=80, duration="7d", seed=11, name="forty"),
            "mail_delay": mail_delay}


def contiguous(kms: list[str], n: int) -> tuple[tuple[str, ...], ...]:
    """The obvious split to beat: KMs in name order, cut into ``n`` runs."""
    size = len(kms) // n
    return tuple(tuple(kms[i * size:(i + 1) * size if i < n - 1 else None]) for i in range(n))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_a_generated_40_km_network_splits_into_equal_regions_cutting_few_links(n: int) -> None:
    data = forty()
    scenario = parse_scenario(data)
    plan = plan_for(scenario, n)
    kms = sorted(km["id"] for km in data["kms"])
    assert sorted(km for region in plan.regions for km in region) == kms  # each KM once
    assert [len(region) for region in plan.regions] == [40 // n] * n
    assert plan_for(parse_scenario(forty()), n) == plan  # the same split every time
    from nodes.network import km_graph
    graph = km_graph(kms, [(link["a"], link["b"]) for link in data["links"]])
    assert len(plan.cut) == cut_links(graph, plan.regions)
    assert len(plan.cut) <= cut_links(graph, contiguous(kms, n))
    # the lookahead by hand: the shortest cut link's fibre at 5 us/km, plus 1 ms of processing
    lengths = {tuple(sorted((link["a"], link["b"]))): link["length_km"] for link in data["links"]}
    cut_lengths = [lengths[edge] for edge, _ in plan.cut]
    if n == 1:
        assert plan.cut == () and plan.lookahead_s == float("inf")
    else:
        assert plan.lookahead_s == pytest.approx(min(cut_lengths) * 5e-6 + 0.001)


def ring(hop_processing: str) -> dict:
    return {"name": "ring", "seed": 1, "duration": "1h", "hop_processing": hop_processing,
            "kms": [{"id": f"KM{i}"} for i in range(1, 5)],
            "links": [{"a": f"KM{i}", "b": f"KM{i % 4 + 1}", "model": "fixed", "rate_bps": 1000}
                      for i in range(1, 5)],
            "lkms": [{"id": f"LKM{i}", "km": f"KM{i}"} for i in range(1, 5)],
            "saes": [{"id": f"SAE_{i}", "email": f"u{i}@example.com", "lkm": f"LKM{i}"}
                     for i in range(1, 5)]}


def test_cut_links_that_take_no_time_are_refused_no_lookahead() -> None:
    scenario = parse_scenario(ring("0s"))  # no lengths, no processing: hops are instant
    assert plan_for(scenario, 1).regions == (("KM1", "KM2", "KM3", "KM4"),)  # nothing is cut
    with pytest.raises(ScenarioError) as refused:
        plan_for(scenario, 2)
    [line] = refused.value.errors
    assert line.startswith("partitions: no lookahead: cut links KM")
    assert plan_for(parse_scenario(ring("1ms")), 2).lookahead_s == pytest.approx(0.001)


def test_mail_between_regions_must_take_at_least_the_lookahead() -> None:
    instant = parse_scenario(forty("0s"))
    assert plan_for(instant, 1).cut == ()  # one region: no mail crosses
    with pytest.raises(ScenarioError) as refused:
        plan_for(instant, 2)
    [line] = refused.value.errors
    assert line.startswith("mail_delay: ") and "send mail between regions" in line
    plan = plan_for(parse_scenario(forty("1s")), 2)
    assert plan_for(parse_scenario(forty(f"{plan.lookahead_s}s")), 2) == plan


def test_a_split_the_graph_cannot_give_names_partitions() -> None:
    scenario = parse_scenario(ring("1ms"))
    for n in (0, 5):
        with pytest.raises(ScenarioError, match="partitions: partitions must be between 1 and"):
            plan_for(scenario, n)


def test_the_command_prints_the_regions_or_exits_2_naming_the_field(tmp_path, capsys) -> None:
    good, bad = tmp_path / "forty.yaml", tmp_path / "ring.yaml"
    good.write_text(yaml.safe_dump(forty()))
    bad.write_text(yaml.safe_dump(ring("0s")))
    assert main([str(good), "--partitions", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("forty: 4 region(s), ") and out.count("  region ") == 4
    assert main([str(bad), "--partitions", "2"]) == 2
    assert "partitions: no lookahead" in capsys.readouterr().err
