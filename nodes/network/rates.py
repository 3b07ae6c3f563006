"""How fast a QKD link makes secret key: the asymptotic decoy-state BB84 model and its presets.

Pure functions, no actors. Per pulse, with mean photon number mu of the signal state
(Lo, Ma, Chen, PRL 94, 230504 (2005); Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005); GLLP 2004)::

    eta   = eta_Bob * 10^(-(alpha*L + loss_extra_db)/10)
    Q_mu  = Y0 + 1 - exp(-eta*mu)                          gain of signal states
    E_mu  = (Y0/2 + e_d*(1 - exp(-eta*mu))) / Q_mu         their QBER
    Y1    = Y0 + eta;  Q1 = Y1*mu*exp(-mu)                  single photons (infinite decoys)
    e1    = (Y0/2 + e_d*eta) / Y1
    R     = q * [Q1*(1 - H2(e1)) - Q_mu*f*H2(E_mu)]        secret bits per pulse (0 if negative)

and the secret key rate is R * pulse rate * duty cycle. The defaults are the "GYS" set that
Ma et al. (2005) simulate with (alpha 0.21 dB/km, e_d 3.3 %, Y0 1.7e-6, eta_Bob 4.5 %, f 1.22,
q 1/2), at a modern 1 GHz pulse rate; with them the rate reaches zero at 142 km, as in that paper.

:data:`PRESETS` are published systems. Each names its source, the parameters the source gives
and the one it does not (fitted to the published rate: the asymptotic model leaves out detector
saturation and finite-size effects, which ``duty_cycle`` stands for). :data:`CALIBRATION` lists
each preset's published rates; ``docs/link-models.md`` prints the same table with the model's
output next to each figure, and a test holds every row within a factor of 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

ABORT_QBER = 0.11  # above it BB84 post-processing yields no key (reference §2, ~11 %)


def h2(x: float) -> float:
    """Binary entropy in bits."""
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -x * math.log2(x) - (1 - x) * math.log2(1 - x)


@dataclass(frozen=True, slots=True)
class DecoyBB84:
    """The physical parameters of a decoy-state BB84 link (defaults: Ma et al. 2005's GYS set,
    at 1 GHz)."""

    pulse_rate_hz: float = 1e9
    mu: float = 0.48
    alpha_db_per_km: float = 0.21
    loss_extra_db: float = 0.0
    detector_efficiency: float = 0.045
    dark_count_prob: float = 1.7e-6
    misalignment: float = 0.033
    ec_efficiency: float = 1.22
    sifting: float = 0.5
    duty_cycle: float = 1.0
    abort_qber: float = ABORT_QBER

    def with_values(self, **values: Any) -> DecoyBB84:
        return replace(self, **values)

    def transmittance(self, length_km: float) -> float:
        loss_db = self.alpha_db_per_km * length_km + self.loss_extra_db
        return self.detector_efficiency * 10 ** (-loss_db / 10)

    def qber(self, length_km: float, misalignment: float | None = None) -> float:
        """E_mu, the QBER of signal states."""
        e_d = self.misalignment if misalignment is None else misalignment
        eta, y0, mu = self.transmittance(length_km), self.dark_count_prob, self.mu
        detected = -math.expm1(-eta * mu)  # 1 - exp(-eta*mu), exact for tiny eta*mu
        if y0 + detected <= 0:
            return 0.5  # nothing ever clicks: the bits would be guesses
        return (0.5 * y0 + e_d * detected) / (y0 + detected)

    def secret_bits_per_pulse(self, length_km: float, misalignment: float | None = None) -> float:
        e_d = self.misalignment if misalignment is None else misalignment
        eta, y0, mu = self.transmittance(length_km), self.dark_count_prob, self.mu
        detected = -math.expm1(-eta * mu)
        gain = y0 + detected
        if gain <= 0:
            return 0.0
        qber = (0.5 * y0 + e_d * detected) / gain
        if qber > self.abort_qber:
            return 0.0
        y1 = y0 + eta
        q1 = y1 * mu * math.exp(-mu)
        e1 = (0.5 * y0 + e_d * eta) / y1
        r = self.sifting * (q1 * (1 - h2(e1)) - gain * self.ec_efficiency * h2(qber))
        return max(r, 0.0)

    def rate_bps(self, length_km: float, misalignment: float | None = None) -> float:
        """Secret key rate in bit/s at ``length_km`` (0 past the cutoff or above abort_qber)."""
        per_pulse = self.secret_bits_per_pulse(length_km, misalignment)
        return per_pulse * self.pulse_rate_hz * self.duty_cycle

    def misalignment_for(self, length_km: float, qber: float) -> float:
        """The optical error e_d at which the link's QBER is ``qber`` (a qber_rise outage: an
        eavesdropper or a fibre fault adds errors; the model then gives the rate)."""
        eta, y0, mu = self.transmittance(length_km), self.dark_count_prob, self.mu
        detected = -math.expm1(-eta * mu)
        return (qber * (y0 + detected) - 0.5 * y0) / detected

    def cutoff_km(self, step_km: float = 0.01, limit_km: float = 2000.0) -> float:
        """The distance past which the model gives no key (bisection on the rate's sign)."""
        lo, hi = 0.0, limit_km
        if self.rate_bps(lo) <= 0:
            return 0.0
        if self.rate_bps(hi) > 0:
            return math.inf
        while hi - lo > step_km:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.rate_bps(mid) > 0 else (lo, mid)
        return lo


PARAMETER_NAMES = tuple(f.name for f in fields(DecoyBB84))


@dataclass(frozen=True, slots=True)
class Preset:
    """A published system: its parameters, where they come from, and what was fitted."""

    name: str
    model: DecoyBB84
    source: str
    fitted: str


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """A published secret key rate at a distance (and the loss the source gives)."""

    preset: str
    length_km: float
    published_bps: float
    note: str


PRESETS: Mapping[str, Preset] = {p.name: p for p in (
    Preset("gys_2005", DecoyBB84(pulse_rate_hz=2e6),
           "Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), GYS parameter set; cutoff 142 km",
           "nothing (a simulation set: its figure is the cutoff distance)"),
    Preset("toshiba_yuan_2018",
           DecoyBB84(pulse_rate_hz=1e9, mu=0.5, alpha_db_per_km=0.2, detector_efficiency=0.31,
                     dark_count_prob=1e-5, misalignment=0.01, ec_efficiency=1.16, sifting=0.94,
                     duty_cycle=0.4),
           "Yuan et al., PRX 8, 021011 (2018): 1 GHz, 31 % self-differencing InGaAs APDs, "
           "efficient BB84 (basis bias), 2 dB over 10 km",
           "duty_cycle 0.4 (detector saturation and finite-size effects)"),
    Preset("toshiba_dixon_2008",
           DecoyBB84(pulse_rate_hz=1.036e9, mu=0.5, alpha_db_per_km=0.21,
                     detector_efficiency=0.08, dark_count_prob=1e-5, misalignment=0.04,
                     ec_efficiency=1.22, sifting=0.5),
           "Dixon et al., Opt. Express 16 (2008): 1.036 GHz decoy BB84, InGaAs APDs",
           "detector_efficiency, dark_count_prob and misalignment, to both published points"),
    Preset("tokyo_toshiba_2011",
           DecoyBB84(pulse_rate_hz=1e9, mu=0.5, alpha_db_per_km=14.5 / 45,
                     detector_efficiency=0.1, dark_count_prob=2.4e-6, misalignment=0.02,
                     ec_efficiency=1.16, sifting=0.5),
           "Sasaki et al., Opt. Express 19 (2011), Toshiba link of the Tokyo QKD "
           "Network: 45 km of installed fibre, 14.5 dB",
           "nothing beyond the loss per km of installed fibre (14.5 dB / 45 km)"),
    Preset("boaron_2018",
           DecoyBB84(pulse_rate_hz=2.5e9, mu=0.5, alpha_db_per_km=0.16,
                     detector_efficiency=0.6, dark_count_prob=1e-9, misalignment=0.005,
                     ec_efficiency=1.16, sifting=0.5, duty_cycle=0.25),
           "Boaron et al., PRL 121, 190502 (2018): 2.5 GHz, SNSPDs, ultra-low-loss fibre "
           "0.16 dB/km",
           "duty_cycle 0.25 (finite-size key and the one-decoy protocol)"),
)}

CALIBRATION: tuple[CalibrationPoint, ...] = (
    CalibrationPoint("toshiba_yuan_2018", 10, 13.72e6, "lab, 2 dB"),
    CalibrationPoint("toshiba_dixon_2008", 20, 1.02e6, "lab"),
    CalibrationPoint("toshiba_dixon_2008", 100, 10.1e3, "lab"),
    CalibrationPoint("tokyo_toshiba_2011", 45, 304e3, "field, 14.5 dB, average"),
    CalibrationPoint("boaron_2018", 421, 6.5, "lab, ultra-low-loss fibre"),
)

#: the published cutoff of the GYS set (Ma et al. 2005), checked by the tests as a calibration
GYS_CUTOFF_KM = 142.0


def preset_model(name: str) -> DecoyBB84:
    try:
        return PRESETS[name].model
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def budget_rate_bps(length_km: float, r0_bps: float, alpha_db_per_km: float) -> float:
    """The plain link budget R0 * 10^(-alpha*L/10) (no detector noise, no cutoff)."""
    return r0_bps * 10 ** (-alpha_db_per_km * length_km / 10)


def calibration_rows() -> list[dict[str, Any]]:
    """Each calibration point with the preset's model output and the ratio (docs and tests)."""
    rows = []
    for point in CALIBRATION:
        model = preset_model(point.preset)
        rate = model.rate_bps(point.length_km)
        rows.append({"preset": point.preset, "length_km": point.length_km,
                     "loss_db": model.alpha_db_per_km * point.length_km + model.loss_extra_db,
                     "published_bps": point.published_bps, "model_bps": rate,
                     "qber": model.qber(point.length_km), "ratio": rate / point.published_bps,
                     "note": point.note, "source": PRESETS[point.preset].source})
    return rows
