"""The QKDLink actor on a real Simulation and virtual clock: blocks, buffer, books, outages."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from nodes.network.link import (
    Available,
    Degrade,
    GetAccount,
    Level,
    LinkSpec,
    QKDLink,
    Refund,
    SetQber,
    SetUp,
    Spend,
)
from nodes.network.rates import DecoyBB84
from simulator.runtime import Simulation

R = 1000.0  # bit/s
B = 10_000  # block bits: one block every 10 s at R
A = 256  # authentication per block
NET = B - A  # 9744 >= 8192: the first block lifts the buffer out of EMPTY
AUTH = 128  # authentication per relay message
CAP = 50_000  # the sixth block overflows


def spec(**values: Any) -> LinkSpec:
    base: dict[str, Any] = {"link_id": "KM1-KM2", "steps": [(0.0, R)], "buffer_bits": CAP,
                            "block_bits": B, "auth_block_bits": A, "auth_relay_bits": AUTH}
    return LinkSpec(**{**base, **values})


@asynccontextmanager
async def link(**values: Any) -> AsyncIterator[tuple[Simulation, Any]]:
    sim = Simulation(7)
    try:
        ref = await sim.spawn(QKDLink(spec(**values), sim.clock, sim.record))
        yield sim, ref
    finally:
        await sim.shutdown()


async def books(ref: Any) -> dict[str, Any]:
    return await ref.ask(GetAccount())


def balance(account: dict[str, Any]) -> tuple[int, int]:
    """Both sides of: initial + generated = relayed + overhead + discarded + final."""
    return (account["initial_bits"] + account["generated_bits"],
            account["relayed_bits"] + account["overhead_bits"] + account["discarded_bits"]
            + account["final_bits"])


def in_state(account: dict[str, Any], state: str) -> float:
    return account["time_in_state_s"].get(state, 0.0)


async def test_an_empty_buffer_fills_in_whole_blocks_until_capacity() -> None:
    block_s = B / R
    async with link() as (sim, ref):
        assert await ref.ask(Level()) == 0
        seen = []
        for k in range(1, 9):  # just before and just after each block completes
            for t in (k * block_s - 0.25, k * block_s + 0.25):
                await sim.run(t)
                assert sim.clock.now() == t
                level = await ref.ask(Level())
                expected = min(CAP, math.floor(R * t / B) * NET)
                assert level == expected, (t, level, expected)
                seen.append(level)
        account = await books(ref)
    assert seen[:4] == [0, NET, NET, 2 * NET]  # the step is seen at the block's completion
    assert seen[-1] == CAP and 5 * NET < CAP < 6 * NET
    assert account["generated_bits"] == 8 * B and account["overhead_bits"] == 8 * A
    assert account["discarded_bits"] == 8 * NET - CAP
    # below one key until the first block, 20-30 % full after it, READY from the second on
    assert account["time_in_state_s"] == {"EMPTY": pytest.approx(10.0),
                                          "WARNING": pytest.approx(10.0),
                                          "READY": pytest.approx(80.25 - 20.0)}
    assert account["time_empty_s"] == pytest.approx(10.0)
    assert balance(account)[0] == balance(account)[1]


async def test_a_full_buffer_discards_whole_blocks_and_counts_them() -> None:
    async with link(initial_bits=CAP) as (sim, ref):
        discarded = []
        for k in range(1, 6):
            await sim.run(k * B / R + 0.5)
            account = await books(ref)
            discarded.append(account["discarded_bits"])
            assert account["final_bits"] == CAP
            assert balance(account)[0] == balance(account)[1]
    assert discarded == [k * NET for k in range(1, 6)]
    assert account["time_in_state_s"] == {"READY": pytest.approx(5 * B / R + 0.5)}


async def test_spend_costs_the_bits_and_the_message_authentication() -> None:
    async with link(initial_bits=40_000, steps=[(0.0, 0.0)]) as (sim, ref):
        assert await ref.ask(Available()) == 40_000 - AUTH
        assert await ref.ask(Spend(8192)) is True
        assert await ref.ask(Level()) == 40_000 - 8192 - AUTH
        level = await ref.ask(Level())
        assert await ref.ask(Spend(level - AUTH + 1)) is False  # one bit short: refused
        assert await ref.ask(Level()) == level
        assert await ref.ask(Spend(level)) is False
        assert await ref.ask(Level()) == level
        account = await books(ref)
        assert (account["relayed_bits"], account["overhead_bits"]) == (8192, AUTH)
        assert await ref.ask(Spend(level - AUTH)) is True  # exactly all of it
        assert await ref.ask(Level()) == 0
        assert await ref.ask(Available()) == 0
        await ref.ask(Refund(level - AUTH))
        assert await ref.ask(Level()) == level
        after = await books(ref)
        await ref.ask(SetUp(False))
        assert await ref.ask(Available()) is None
        assert await ref.ask(Spend(8)) is False  # down: refused, nothing taken
        assert await ref.ask(Level()) == level
    assert (after["relayed_bits"], after["overhead_bits"]) == (8192, AUTH)
    assert after["final_bits"] == level and balance(after)[0] == balance(after)[1]


async def test_a_refund_into_a_full_buffer_is_discarded_and_booked() -> None:
    async with link(initial_bits=CAP, steps=[(0.0, 0.0)]) as (sim, ref):
        assert await ref.ask(Spend(1000)) is True
        await ref.ask(Refund(1000))
        assert await ref.ask(Level()) == CAP
        assert await ref.ask(Spend(1000)) is True
        await ref.ask(Refund(5000))  # more than it took: the excess overflows
        account = await books(ref)
    assert account["final_bits"] == CAP and account["discarded_bits"] == 4000
    assert balance(account)[0] == balance(account)[1]


async def test_the_books_balance_across_spends_refunds_outages_and_qber() -> None:
    model = DecoyBB84()
    length = 20.0
    q = 0.05
    factor = model.rate_bps(length, model.misalignment_for(length, q)) / model.rate_bps(length)
    async with link(model=model, length_km=length, buffer_bits=200_000) as (sim, ref):
        made = 0.0  # the key rate integrated over the run, the expected generation
        await sim.run(35)
        made += R * 35
        assert await ref.ask(Spend(20_000)) is True
        assert await ref.ask(Spend(5_000)) is True
        await ref.ask(Refund(5_000))
        await ref.ask(SetUp(False))
        down_at = await books(ref)
        await sim.run(135)  # 100 s down: nothing made
        while_down = await books(ref)
        assert while_down["generated_bits"] == down_at["generated_bits"]
        assert while_down["final_bits"] == down_at["final_bits"]
        assert await ref.ask(Spend(1_000)) is False
        await ref.ask(SetUp(True))
        await sim.run(170)
        made += R * 35
        await ref.ask(Degrade(0.5))
        await sim.run(250)
        made += 0.5 * R * 80
        await ref.ask(Degrade(1.0))
        await ref.ask(SetQber(q))
        await sim.run(1000)
        made += factor * R * 750
        await ref.ask(SetQber(None))
        assert await ref.ask(Spend(30_000)) is True
        await sim.run(1600)  # fills up: some blocks are discarded
        made += R * 600
        account = await books(ref)
    assert account["generated_bits"] == math.floor(made / B) * B
    assert account["discarded_bits"] > 0 and account["final_bits"] == 200_000
    assert account["relayed_bits"] == 50_000 and account["overhead_bits"] == (
        2 * AUTH + account["generated_bits"] // B * A)
    assert balance(account)[0] == balance(account)[1]
    assert in_state(account, "DOWN") == pytest.approx(100.0)
    assert sum(account["time_in_state_s"].values()) == pytest.approx(1600.0)
    assert account["qber_peak"] == pytest.approx(q)


@pytest.mark.parametrize("rate", [R, 777.0, 3000.0])
async def test_time_empty_is_the_time_to_the_first_block(rate: float) -> None:
    async with link(steps=[(0.0, rate)], buffer_bits=10**9) as (sim, ref):
        await sim.run(B / rate / 3)  # a touch while the first block is in post-processing
        await ref.ask(Level())
        await sim.run(95)
        account = await books(ref)
    assert account["time_empty_s"] == pytest.approx(B / rate, abs=1e-6)
    assert in_state(account, "EMPTY") == pytest.approx(B / rate, abs=1e-6)
    assert account["final_bits"] == math.floor(rate * 95 / B) * NET


async def test_time_empty_counts_every_block_below_one_key() -> None:
    small = 5_000  # 4744 net bits a block: two blocks to reach one key (8192 bits)
    async with link(block_bits=small, steps=[(0.0, 700.0)]) as (sim, ref):
        await sim.run(60)
        account = await books(ref)
    assert account["time_empty_s"] == pytest.approx(2 * small / 700.0, abs=1e-6)


@pytest.mark.parametrize("warmup_s", [25.0, 33.3, 1000.0])
async def test_warmup_fills_the_buffer_before_the_run(warmup_s: float) -> None:
    async with link(warmup_s=warmup_s) as (sim, ref):
        account = await books(ref)
        level = await ref.ask(Level())
    expected = min(CAP, math.floor(R * warmup_s / B) * NET)
    assert account["initial_bits"] == expected == level
    assert account["generated_bits"] == 0 and account["discarded_bits"] == 0
    assert account["overhead_bits"] == 0 and account["time_in_state_s"] == {}
    assert account["time_empty_s"] == 0


async def test_a_qber_rise_lowers_the_key_by_the_models_ratio() -> None:
    model = DecoyBB84()
    nominal = model.rate_bps(20)
    hour = 3600.0
    values = {"model": model, "length_km": 20, "steps": [(0.0, nominal)],
              "buffer_bits": 10**12, "block_bits": 100_000, "model_name": "decoy_bb84"}
    async with link(**values) as (sim, ref):
        await sim.run(hour)
        plain = (await books(ref))["generated_bits"]
    q = 0.05
    ratio = model.rate_bps(20, model.misalignment_for(20, q)) / nominal
    assert 0.1 < ratio < 0.9
    async with link(**values) as (sim, ref):
        await ref.ask(SetQber(q))
        await sim.run(hour)
        raised = await books(ref)
    assert abs(plain - nominal * hour) < 100_000
    assert abs(raised["generated_bits"] - ratio * nominal * hour) < 100_000
    assert raised["generated_bits"] / plain == pytest.approx(ratio, rel=1e-3)
    assert raised["qber_peak"] == pytest.approx(q)
    assert raised["qber"] == pytest.approx(model.qber(20), abs=1e-6)  # the model's own


async def test_a_qber_above_abort_stops_the_link_until_restored() -> None:
    model = DecoyBB84()
    nominal = model.rate_bps(20)
    values = {"model": model, "length_km": 20, "steps": [(0.0, nominal)],
              "buffer_bits": 10**12, "block_bits": 100_000}
    async with link(**values) as (sim, ref):
        await sim.run(100)
        before = await books(ref)
        await ref.ask(SetQber(model.abort_qber + 0.01))
        await sim.run(400)
        during = await books(ref)
        assert await ref.ask(Spend(1000)) is True  # key in the buffer is still relayed
        events = [e for e in sim.recorder.events if e.kind == "link_state"]
        await ref.ask(SetQber(None))
        await sim.run(700)
        after = await books(ref)
    assert during["generated_bits"] == before["generated_bits"]
    assert in_state(during, "ABORT") == pytest.approx(300.0)
    assert [e.get("state") for e in events][-1] == "ABORT"
    # restored: the next 300 s make the nominal rate again (the pending part of a block
    # carried over the abort)
    assert abs(after["generated_bits"] - nominal * 400) < 100_000
    assert in_state(after, "ABORT") == pytest.approx(300.0)
    assert after["qber_peak"] == pytest.approx(model.abort_qber + 0.01)


async def test_set_qber_on_a_link_without_a_model_fails() -> None:
    async with link() as (sim, ref):
        with pytest.raises(ValueError):
            await ref.ask(SetQber(0.05))


@pytest.mark.parametrize("t", [45.0, 60.0, 61.0, 99.0, 137.5])
async def test_a_curve_link_integrates_its_steps(t: float) -> None:
    r1, r2, switch = 1000.0, 370.0, 60.0
    steps = [(0.0, r1), (switch, r2)]
    async with link(steps=steps, buffer_bits=10**9) as (sim, ref):
        await sim.run(30.0)  # a touch before the switch, one after
        await ref.ask(Level())
        await sim.run(t)
        account = await books(ref)
    made = r1 * min(t, switch) + r2 * max(0.0, t - switch)
    assert account["generated_bits"] == math.floor(made / B) * B
    assert account["final_bits"] == math.floor(made / B) * NET
