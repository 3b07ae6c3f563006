"""Scenario links, field by field: how fast each QKD link makes key (its rate model), and its
buffer, block and authentication settings (docs/link-models.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from nodes.network import PRESETS, DecoyBB84, budget_rate_bps, preset_model
from nodes.run.scenario.base import (
    Count,
    Frozen,
    Id,
    Loc,
    PathErrors,
    PositiveCount,
    PositiveSeconds,
    Seconds,
)


class RatePoint(Frozen):
    """From `at` on (until the next point), the link produces `rate_bps`."""

    at_s: Seconds = Field(alias="at")
    rate_bps: float = Field(ge=0)


LinkModel = Literal["fixed", "budget", "curve", "decoy_bb84"]
Probability = Annotated[float, Field(ge=0, le=1)]


class DecoyParams(Frozen):
    """Physical parameters of a `decoy_bb84` link; unset ones come from its `preset`, or the
    model's defaults (docs/link-models.md)."""

    pulse_rate_hz: float | None = Field(None, gt=0)
    mu: float | None = Field(None, gt=0, le=10, description="mean photon number of signals")
    alpha_db_per_km: float | None = Field(None, ge=0, description="fibre loss")
    loss_extra_db: float | None = Field(None, ge=0, description="loss besides the fibre's")
    detector_efficiency: float | None = Field(None, gt=0, le=1)
    dark_count_prob: Probability | None = Field(None, description="Y0, per pulse window")
    misalignment: float | None = Field(None, ge=0, lt=0.5, description="optical error e_d")
    ec_efficiency: float | None = Field(None, ge=1, description="error correction f")
    sifting: float | None = Field(None, gt=0, le=1)
    duty_cycle: float | None = Field(None, gt=0, le=1)
    abort_qber: float | None = Field(None, gt=0, lt=0.5)


_MODEL_FIELDS = {"fixed": "rate_bps", "budget": "length_km", "curve": "rate_curve",
                 "decoy_bb84": "length_km"}


class Link(Frozen):
    """A QKD link between KMs `a` and `b`; `model` says how fast it makes key: `fixed`
    (`rate_bps`), `budget` (`length_km`: R0 * 10^(-alpha*L/10)), `curve` (`rate_curve`) or
    `decoy_bb84` (`length_km`, a `preset` and/or `params`). Without `model`, the one of
    rate_bps, length_km and rate_curve given says which of the first three."""

    a: Id
    b: Id
    model: LinkModel | None = None
    rate_bps: float | None = Field(None, gt=0)
    length_km: float | None = Field(None, ge=0)
    r0_bps: float = Field(17_094_000.0, gt=0)
    alpha_db_per_km: float = Field(0.2, ge=0)
    rate_curve: tuple[RatePoint, ...] | None = Field(None, min_length=1)
    preset: str | None = None
    params: DecoyParams | None = None
    buffer_bits: PositiveCount = 10_000_000
    initial_bits: Count = Field(0, description="the buffer's fill at t = 0 (default: empty)")
    warmup_s: PositiveSeconds | None = Field(
        None, alias="warmup", description="pre-run generation for this long before t = 0")
    block_bits: PositiveCount = Field(
        100_000, description="secret key per post-processing block: key arrives in blocks")
    auth_block_bits: Count = Field(256, description="authentication key spent per block")
    auth_relay_bits: Count = Field(128, description="authentication key per relay message")

    @property
    def id(self) -> str:
        """The link's name as outage targets write it: "KM1-KM2"."""
        return f"{self.a}-{self.b}"

    @property
    def kind(self) -> str:
        """The rate model, given or inferred."""
        if self.model is not None:
            return self.model
        if self.preset is not None or self.params is not None:
            return "decoy_bb84"
        return {"rate_bps": "fixed", "length_km": "budget"}.get(
            next((n for n in ("rate_bps", "length_km", "rate_curve")
                  if getattr(self, n) is not None), ""), "curve")

    def physical(self) -> DecoyBB84 | None:
        """The decoy-state BB84 model of a `decoy_bb84` link (None for the others)."""
        if self.kind != "decoy_bb84":
            return None
        base = preset_model(self.preset) if self.preset is not None else DecoyBB84()
        given = {} if self.params is None else self.params.model_dump(exclude_none=True)
        return base.with_values(**given)

    def rate_bps_at(self, t_s: float) -> float:
        """Return the key rate at `t_s` by the link's model.

        A curve holds each point's rate until the next point; before its first point the
        link runs at the first point's rate.
        """
        kind = self.kind
        if kind == "fixed":
            assert self.rate_bps is not None
            return self.rate_bps
        if kind == "budget":
            assert self.length_km is not None
            return budget_rate_bps(self.length_km, self.r0_bps, self.alpha_db_per_km)
        if kind == "decoy_bb84":
            model = self.physical()
            assert model is not None and self.length_km is not None
            return model.rate_bps(self.length_km)
        assert self.rate_curve is not None  # invariant of _one_rate_model
        current = self.rate_curve[0].rate_bps
        for point in self.rate_curve:
            if point.at_s <= t_s:
                current = point.rate_bps
        return current

    @model_validator(mode="after")
    def _one_rate_model(self) -> Link:
        errors: list[tuple[Loc, str]] = []
        given = [n for n in ("rate_bps", "length_km", "rate_curve") if getattr(self, n) is not None]
        kind = self.kind
        if self.model is None and self.preset is None and self.params is None and len(given) != 1:
            got = ", ".join(given) or "none"
            errors.append(((), f"give a model, or exactly one of rate_bps, length_km, rate_curve "
                               f"(got {got})"))
        elif (needed := _MODEL_FIELDS[kind]) not in given:
            errors.append(((needed,), f"required for model '{kind}'"))
        for name in given:
            if name != _MODEL_FIELDS[kind] and not (name == "length_km" and kind == "fixed"):
                errors.append(((name,), f"does not apply to model '{kind}'"))
        for name in ("r0_bps", "alpha_db_per_km"):
            if name in self.model_fields_set and kind != "budget":
                errors.append(((name,), "only applies to model 'budget'"))
        for name in ("preset", "params"):
            if getattr(self, name) is not None and kind != "decoy_bb84":
                errors.append(((name,), "only applies to model 'decoy_bb84'"))
        if self.preset is not None and self.preset not in PRESETS:
            errors.append((("preset",), f"unknown preset '{self.preset}' "
                                        f"(known: {', '.join(PRESETS)})"))
        if self.initial_bits > self.buffer_bits:
            errors.append((("initial_bits",), f"{self.initial_bits} is more than buffer_bits "
                                              f"({self.buffer_bits})"))
        if self.warmup_s is not None and "initial_bits" in self.model_fields_set:
            errors.append((("warmup",), "give initial_bits or warmup, not both"))
        if self.auth_block_bits >= self.block_bits:
            errors.append((("auth_block_bits",), f"must be less than block_bits "
                                                 f"({self.block_bits})"))
        errors += _curve_order_errors(self.rate_curve or ())
        if errors:
            raise PathErrors(errors)
        return self


def _curve_order_errors(curve: tuple[RatePoint, ...]) -> list[tuple[Loc, str]]:
    return [
        (("rate_curve", i, "at"), f"must come after the previous point ({prev.at_s:g}s)")
        for i, (prev, point) in enumerate(zip(curve, curve[1:]), start=1)
        if point.at_s <= prev.at_s
    ]
