"""The decoy-state BB84 rate model (nodes/network/rates.py) against an independent reference.

The reference below is written from the formula in the brief (Lo, Ma, Chen 2005; Ma et al.
2005; GLLP), in numpy with natural logarithms and expm1, so it shares no code with the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nodes.network.rates import (
    CALIBRATION,
    GYS_CUTOFF_KM,
    PRESETS,
    DecoyBB84,
    calibration_rows,
)

DEFAULTS = {"pulse": 1e9, "mu": 0.48, "alpha": 0.21, "extra": 0.0, "eta_bob": 0.045,
            "y0": 1.7e-6, "e_d": 0.033, "f": 1.22, "q": 0.5, "duty": 1.0}


def entropy(x: float) -> float:
    """Binary entropy in bits, through natural logarithms."""
    x = np.float64(x)
    if x <= 0 or x >= 1:
        return 0.0
    return float(-(x * np.log(x) + (1 - x) * np.log1p(-x)) / np.log(2.0))


def reference(length_km: float, **overrides: float) -> dict[str, float]:
    """Gain, QBER and secret key rate (bit/s) of the reference formula (no abort rule)."""
    p = {**DEFAULTS, **overrides}
    eta = p["eta_bob"] * np.power(10.0, -(p["alpha"] * length_km + p["extra"]) / 10.0)
    clicks = -np.expm1(-eta * p["mu"])  # 1 - exp(-eta*mu)
    gain = p["y0"] + clicks
    qber = (p["y0"] / 2 + p["e_d"] * clicks) / gain
    y1 = p["y0"] + eta
    q1 = y1 * p["mu"] * np.exp(-p["mu"])
    e1 = (p["y0"] / 2 + p["e_d"] * eta) / y1
    per_pulse = p["q"] * (q1 * (1 - entropy(e1)) - gain * p["f"] * entropy(qber))
    per_pulse = max(float(per_pulse), 0.0)
    return {"gain": float(gain), "qber": float(qber),
            "rate": per_pulse * p["pulse"] * p["duty"]}


def as_reference(model: DecoyBB84) -> dict[str, float]:
    """A model's parameters under the reference's names."""
    return {"pulse": model.pulse_rate_hz, "mu": model.mu, "alpha": model.alpha_db_per_km,
            "extra": model.loss_extra_db, "eta_bob": model.detector_efficiency,
            "y0": model.dark_count_prob, "e_d": model.misalignment, "f": model.ec_efficiency,
            "q": model.sifting, "duty": model.duty_cycle}


def test_the_defaults_are_the_gys_set_at_1_ghz() -> None:
    assert as_reference(DecoyBB84()) == DEFAULTS
    assert DecoyBB84().abort_qber == 0.11


@pytest.mark.parametrize("length_km", [10, 50, 100])
def test_the_rate_at_a_distance_equals_the_reference_formula(length_km: float) -> None:
    model = DecoyBB84()
    expected = reference(length_km)
    assert expected["rate"] > 0
    assert model.rate_bps(length_km) == pytest.approx(expected["rate"], rel=1e-9)
    assert model.qber(length_km) == pytest.approx(expected["qber"], rel=1e-9)


def test_the_reference_values_are_the_expected_orders_of_magnitude() -> None:
    # a guard on the reference itself: ~1.6 Mbit/s at 10 km, ~17 kbit/s at 100 km at 1 GHz
    assert 1.4e6 < reference(10)["rate"] < 1.8e6
    assert 1.5e4 < reference(100)["rate"] < 2.0e4


@pytest.mark.parametrize("overrides", [
    {"extra": 3.0}, {"mu": 0.3, "e_d": 0.02}, {"pulse": 2e6, "duty": 0.5},
    {"f": 1.0, "q": 1.0}, {"eta_bob": 0.1, "y0": 1e-5, "alpha": 0.2},
])
def test_other_parameters_also_match_the_reference(overrides: dict[str, float]) -> None:
    names = {"pulse": "pulse_rate_hz", "mu": "mu", "alpha": "alpha_db_per_km",
             "extra": "loss_extra_db", "eta_bob": "detector_efficiency",
             "y0": "dark_count_prob", "e_d": "misalignment", "f": "ec_efficiency",
             "q": "sifting", "duty": "duty_cycle"}
    model = DecoyBB84().with_values(**{names[k]: v for k, v in overrides.items()})
    for length_km in (0, 25, 60):
        assert model.rate_bps(length_km) == pytest.approx(
            reference(length_km, **overrides)["rate"], rel=1e-9)


def test_qber_rises_strictly_with_distance() -> None:
    model = DecoyBB84()
    grid = np.arange(0.0, 250.0, 2.5)
    qbers = [model.qber(float(length)) for length in grid]
    assert all(b > a for a, b in zip(qbers, qbers[1:]))
    assert qbers[0] == pytest.approx(reference(0)["qber"], rel=1e-9)
    assert qbers[-1] > 0.11  # far past the cutoff the dark counts dominate


def test_the_rate_has_a_cutoff_and_it_is_the_published_one() -> None:
    model = DecoyBB84()
    cutoff = model.cutoff_km()
    assert math.isfinite(cutoff)
    assert abs(cutoff - GYS_CUTOFF_KM) <= 1.0
    assert model.rate_bps(cutoff) > 0
    assert model.rate_bps(cutoff - 0.5) > 0
    assert model.rate_bps(cutoff + 0.02) == 0
    for beyond in (cutoff + 1, cutoff + 10, 200, 500, 1000):
        assert model.rate_bps(beyond) == 0
    # the reference agrees about the sign on both sides
    assert reference(cutoff - 0.5)["rate"] > 0 and reference(cutoff + 0.5)["rate"] == 0


def test_the_cutoff_of_the_gys_preset_is_also_142_km() -> None:
    # the pulse rate scales the rate, not its sign
    assert abs(PRESETS["gys_2005"].model.cutoff_km() - GYS_CUTOFF_KM) <= 1.0


def test_the_rate_falls_monotonically_with_distance() -> None:
    model = DecoyBB84()
    cutoff = model.cutoff_km()
    grid = [float(x) for x in np.arange(0.0, 300.0, 1.0)]
    rates = [model.rate_bps(length) for length in grid]
    assert all(b <= a for a, b in zip(rates, rates[1:]))
    inside = [r for length, r in zip(grid, rates) if length < cutoff]
    assert all(b < a for a, b in zip(inside, inside[1:]))  # strictly, while there is key
    assert all(r == 0 for length, r in zip(grid, rates) if length > cutoff)


def test_a_qber_above_abort_gives_no_key() -> None:
    raised = DecoyBB84(misalignment=0.12)
    for length_km in (0, 10, 50):
        assert raised.qber(length_km) > raised.abort_qber
        assert raised.rate_bps(length_km) == 0
        assert raised.secret_bits_per_pulse(length_km) == 0


def test_the_abort_threshold_alone_stops_the_key() -> None:
    # with the threshold below the link's QBER, a link the formula gives key to makes none
    model = DecoyBB84()
    strict = model.with_values(abort_qber=0.03)
    assert model.qber(10) > 0.03 and reference(10)["rate"] > 0
    assert strict.rate_bps(10) == 0
    assert model.rate_bps(10, misalignment=0.2) == 0  # through the misalignment argument


@pytest.mark.parametrize("length_km", [0, 20, 80, 130])
@pytest.mark.parametrize("qber", [0.035, 0.05, 0.08, 0.105])
def test_misalignment_for_gives_a_model_with_that_qber(length_km: float, qber: float) -> None:
    model = DecoyBB84()
    e_d = model.misalignment_for(length_km, qber)
    assert model.qber(length_km, e_d) == pytest.approx(qber, rel=1e-12)
    assert model.with_values(misalignment=e_d).qber(length_km) == pytest.approx(qber, rel=1e-12)
    assert reference(length_km, e_d=e_d)["qber"] == pytest.approx(qber, rel=1e-9)
    if qber >= model.qber(length_km):  # a higher QBER never gives more key
        assert model.rate_bps(length_km, e_d) <= model.rate_bps(length_km)


def test_misalignment_for_the_nominal_qber_is_the_nominal_misalignment() -> None:
    model = DecoyBB84()
    assert model.misalignment_for(50, model.qber(50)) == pytest.approx(model.misalignment,
                                                                       rel=1e-9)


def test_every_calibration_point_is_within_a_factor_of_2() -> None:
    rows = calibration_rows()
    assert len(rows) == len(CALIBRATION) and len(rows) >= 5
    assert {row["preset"] for row in rows} <= set(PRESETS)
    for row, point in zip(rows, CALIBRATION):
        assert (row["preset"], row["length_km"]) == (point.preset, point.length_km)
        assert row["published_bps"] == point.published_bps
        assert 0.5 <= row["ratio"] <= 2.0, row
        expected = reference(point.length_km, **as_reference(PRESETS[point.preset].model))
        assert row["model_bps"] == pytest.approx(expected["rate"], rel=1e-9), row
        assert row["ratio"] == pytest.approx(expected["rate"] / point.published_bps, rel=1e-9)
        # the module's 1 - exp(-eta*mu) loses ~1e-9 (relative) at 421 km, where eta*mu ~ 5e-8;
        # the reference uses expm1, hence the looser tolerance on the QBER
        assert row["qber"] == pytest.approx(expected["qber"], rel=1e-8)
