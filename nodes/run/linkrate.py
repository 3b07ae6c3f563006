"""Secret key rate against distance (``run_scenario.py linkrate``): the model asked for (the
``decoy_bb84`` defaults or a preset, with ``--param`` overrides), its table of loss, QBER and
rate, the figure's curves (drawn by linkplots.py), and the calibration table that
docs/link-models.md prints (``run_scenario.py linkrate --calibration`` regenerates it; a test
holds the doc to it).

Everything here but :func:`link_rate_report`, which writes the figure, is a pure function.
Bad input raises :class:`LinkRateError`, whose message names the option or parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from nodes.network import CALIBRATION, PARAMETER_NAMES, PRESETS, DecoyBB84, calibration_rows
from nodes.run.linkplots import RateCurve, write_rate_figure
from nodes.run.scenario.links import DecoyParams

DEFAULT_OUT = Path("results") / "linkrate"
FIGURE_NAME = "rate_vs_distance.png"
DEFAULT_STEP_KM = 10.0
FALLBACK_MAX_KM = 200.0  # the table's reach when the model has no cutoff (or no key at all)
CUTOFF_MARGIN = 1.1  # by default the table and figure go this far past the cutoff
MAX_KM = 2000.0  # DecoyBB84.cutoff_km looks no further
MAX_ROWS = 2000
CURVE_POINTS = 600
CUTOFF_RESOLUTION_KM = 0.01  # DecoyBB84.cutoff_km's default step


class LinkRateError(ValueError):
    """Bad linkrate input; the message names the option or parameter."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The model to tabulate, what to call it, and the preset it starts from (if any)."""

    label: str
    model: DecoyBB84
    preset: str | None = None


def parse_param(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` -> (name, value): a DecoyBB84 field and a finite number, within the
    bounds a scenario's ``params`` allow."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise LinkRateError(f"--param {text!r}: expected NAME=VALUE, e.g. mu=0.5")
    if name not in PARAMETER_NAMES:
        raise LinkRateError(f"--param {name}: unknown parameter "
                            f"(known: {', '.join(PARAMETER_NAMES)})")
    try:
        value = float(raw)
    except ValueError:
        raise LinkRateError(f"--param {name}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise LinkRateError(f"--param {name}: {raw.strip()!r} is not a finite number")
    try:
        DecoyParams.model_validate({name: value})
    except ValidationError as error:
        raise LinkRateError(f"--param {name}: {error.errors()[0]['msg']}") from None
    return name, value


def choose_model(preset: str | None, params: Sequence[str] = ()) -> Choice:
    """The decoy_bb84 defaults, or ``preset``'s model, with each ``NAME=VALUE`` applied."""
    if preset is not None and preset not in PRESETS:
        raise LinkRateError(f"--preset {preset}: unknown preset (known: {', '.join(PRESETS)})")
    model = DecoyBB84() if preset is None else PRESETS[preset].model
    values = dict(parse_param(text) for text in params)
    label = "decoy_bb84 defaults (GYS set at 1 GHz)" if preset is None else preset
    if values:
        model = model.with_values(**values)
        label += " with " + ", ".join(f"{k}={v:g}" for k, v in values.items())
    return Choice(label, model, preset)


def default_max_km(cutoff_km: float, step_km: float) -> float:
    """A bit past the cutoff, on the step grid (FALLBACK_MAX_KM without a finite cutoff)."""
    if not 0 < cutoff_km < math.inf:
        return FALLBACK_MAX_KM
    return min(MAX_KM, step_km * math.ceil(CUTOFF_MARGIN * cutoff_km / step_km))


def distances(max_km: float, step_km: float) -> list[float]:
    """0, step, 2 step, ... up to max_km (max_km itself last if it is off the grid)."""
    count = math.floor(max_km / step_km + 1e-9)
    found = [round(i * step_km, 9) for i in range(count + 1)]
    return found if math.isclose(found[-1], max_km) else [*found, max_km]


def rate_rows(model: DecoyBB84, max_km: float, step_km: float) -> list[dict[str, float]]:
    """Distance, loss, QBER and secret key rate, every ``step_km`` from 0 to ``max_km``."""
    return [{"km": km, "loss_db": model.alpha_db_per_km * km + model.loss_extra_db,
             "qber": model.qber(km), "rate_bps": model.rate_bps(km)}
            for km in distances(max_km, step_km)]


def format_rate(bps: float) -> str:
    """A rate to three significant digits in bit/s, kbit/s, Mbit/s or Gbit/s."""
    if bps <= 0:
        return "0 bit/s"
    rounded = float(f"{bps:.3g}")
    for scale, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if rounded >= scale:
            return f"{rounded / scale:.3g} {unit}"
    return f"{rounded:.3g} bit/s"


def format_table(choice: Choice, rows: list[dict[str, float]], cutoff_km: float) -> str:
    """The rows as a fixed-width table under the model's name, and the cutoff line."""
    cells = [("km", "loss dB", "QBER %", "key rate")]
    cells += [(f"{r['km']:g}", f"{r['loss_db']:.1f}", f"{100 * r['qber']:.2f}",
               format_rate(r["rate_bps"])) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [f"decoy_bb84 model: {choice.label}"]
    if choice.preset is not None:
        lines.append(f"  {PRESETS[choice.preset].source}")
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in cells]
    lines.insert(3 if choice.preset is not None else 2, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, cutoff_line(choice.model, cutoff_km)])


def cutoff_line(model: DecoyBB84, cutoff_km: float) -> str:
    if cutoff_km == 0:
        return f"cutoff: no key at any distance (QBER at 0 km: {100 * model.qber(0):.2f} %)"
    if math.isinf(cutoff_km):
        return f"cutoff: none within {MAX_KM:g} km"
    return (f"cutoff: {cutoff_km:.1f} km (no key beyond; QBER there "
            f"{100 * model.qber(cutoff_km):.2f} %)")


def rate_curve(choice: Choice, max_km: float) -> RateCurve:
    """The model sampled finely up to ``max_km`` (and on both sides of its cutoff, so the
    figure shows where the rate falls to 0), with the published points of its preset."""
    model = choice.model
    cutoff = model.cutoff_km()
    edge = {cutoff, cutoff + CUTOFF_RESOLUTION_KM} if 0 < cutoff < max_km else set()
    km = sorted({max_km * i / CURVE_POINTS for i in range(CURVE_POINTS + 1)} | edge)
    published = [(p.length_km, p.published_bps) for p in CALIBRATION
                 if p.preset == choice.preset]
    return RateCurve(choice.label, km, [model.rate_bps(x) for x in km],
                     [model.qber(x) for x in km], cutoff, published, model.abort_qber)


def link_rate_report(preset: str | None, params: Sequence[str], max_km: float | None,
                     step_km: float | None, out_dir: Path, compare: bool = False
                     ) -> tuple[str, Path]:
    """The table (text) and the figure (written to ``out_dir/rate_vs_distance.png``): the
    chosen model, and with ``compare`` every preset on the same axes."""
    choice = choose_model(preset, params)
    step = DEFAULT_STEP_KM if step_km is None else step_km
    if not 0 < step <= MAX_KM:
        raise LinkRateError(f"--step-km {step:g}: must be above 0 and at most {MAX_KM:g}")
    if max_km is not None and not 0 < max_km <= MAX_KM:
        raise LinkRateError(f"--max-km {max_km:g}: must be above 0 and at most {MAX_KM:g}")
    try:
        cutoff = choice.model.cutoff_km()
        reach = default_max_km(cutoff, step) if max_km is None else max_km
        if reach / step > MAX_ROWS:
            raise LinkRateError(f"--step-km {step:g}: {reach:g} km would take more than "
                                f"{MAX_ROWS} rows")
        text = format_table(choice, rate_rows(choice.model, reach, step), cutoff)
        others = [choose_model(name) for name in PRESETS if compare and name != choice.label]
        if compare and max_km is None:
            reach = max([reach, *(default_max_km(c.model.cutoff_km(), step) for c in others)])
        curves = [rate_curve(c, reach) for c in [choice, *others]]
        if others and choice.preset is not None and choice.label != choice.preset:
            curves[0] = replace(curves[0], published=[])  # the preset's own curve has them
    except ZeroDivisionError:  # Q_mu = 0: no photon (eta underflows) and no dark count
        raise LinkRateError("--param dark_count_prob: with 0 the QBER is 0/0 where no photon "
                            "arrives at all; give a small positive value") from None
    title = choice.label
    if compare:
        title = "every preset" if choice.label in PRESETS else f"{title} and every preset"
    path = out_dir / FIGURE_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_rate_figure(curves, f"Secret key rate and QBER against distance: {title}", reach,
                          path)
    except OSError as error:
        raise LinkRateError(f"--out {out_dir}: cannot write {path.name} ({error})") from None
    return text, path


def plain(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without an exponent, thousands separated."""
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def exact(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,g}"


CALIBRATION_HEADER = ("preset", "distance km", "loss dB", "published bit/s", "model bit/s",
                      "ratio", "source")


def calibration_markdown(rows: list[dict[str, Any]] | None = None) -> str:
    """The calibration table of docs/link-models.md: each published rate beside the model's
    (three significant digits) and their ratio, model / published."""
    lines = ["| " + " | ".join(CALIBRATION_HEADER) + " |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in calibration_rows() if rows is None else rows:
        source = f"{row['source'].split(':')[0]}; {row['note']}".replace("|", "\\|")
        lines.append("| " + " | ".join((
            row["preset"], f"{row['length_km']:g}", f"{row['loss_db']:.1f}",
            exact(row["published_bps"]), plain(row["model_bps"]), f"{row['ratio']:.2f}",
            source)) + " |")
    return "\n".join(lines) + "\n"
