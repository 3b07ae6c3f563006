"""A whole scenario: the :class:`Scenario` model, its lookups, and command-line overrides.

A scenario names the topology (KMs, QKD links, LKMs, SAEs), the traffic, the outages and the
expectations of one run. It is checked completely before anything is built, and every problem is
reported as `dotted.path: message` (`lkms.1.km: unknown KM 'KM9'`), paths using the YAML keys.
Cross-references (:mod:`.checks`) are checked only once every field is valid on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, model_validator

from nodes.run.scenario.base import (
    Count,
    Frozen,
    Id,
    PathErrors,
    PositiveSeconds,
    Seconds,
    error_line,
)
from nodes.run.scenario.checks import reference_errors, target_kinds
from nodes.run.scenario.links import Link
from nodes.run.scenario.schema import (
    KM,
    LKM,
    SAE,
    Defaults,
    Expectation,
    Outage,
    SenderQuota,
    SyncPolicy,
    Traffic,
    _OrBareName,
)
from simulator import format_duration, parse_duration


@dataclass(frozen=True, slots=True)
class LKMSettings:
    """An LKM's settings with the scenario defaults merged in."""

    id: str
    km: str
    pool_size: int
    slice_size: int | None
    key_size_bits: int
    max_keys_per_request: int
    sync: SyncPolicy
    port: int | None
    profile: str = "etsi"
    status_shape: str = "auto"
    sender_quota: SenderQuota | None = None


class Scenario(Frozen):
    """A whole scenario: topology, traffic, outages and expectations of one run."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: Count = 0
    duration_s: PositiveSeconds = Field(alias="duration")
    clock: Literal["virtual", "wall"] = "virtual"
    time_scale: float = Field(1.0, gt=0, description="wall clock only: simulated s per real s")
    sample_interval_s: PositiveSeconds = Field(
        600.0, alias="sample_interval", description="how often pools and links are sampled "
        "(default 10m; unset, a served run samples every 5 s of wall time)")
    transport: Literal["http", "direct"] = Field(
        "http", description="how simulated SAEs reach their LKM: real HTTP to its served ETSI 014 "
        "API, or the same ETSI messages asked of the LKM actor directly (no HTTP stack; faster)")
    routing: Literal["fewest_hops", "widest", "key_aware"] = Field(
        "fewest_hops", description="how relays choose a path: fewest hops (ties in name order), "
        "the widest (largest smallest buffer), or key_aware (a hop costs 1 + demand/available)")
    routing_update_s: Seconds = Field(
        10.0, gt=0, alias="routing_update",
        description="widest and key_aware routing: how often every link's key level is "
        "collected; paths are chosen on the collection before the last (one period old), as a "
        "controller polling the KMs would")
    hop_processing_s: Seconds = Field(
        0.001, ge=0, alias="hop_processing",
        description="a KM's time to forward one relay message (OTP and authentication)")
    mail_delay_s: Seconds = Field(
        0.0, ge=0, alias="mail_delay",
        description="how long a mail takes from its sender to its receiver (0: it arrives as "
        "it is sent; a partitioned run needs at least the lookahead for mail between regions)")
    defaults: Defaults = Field(default_factory=Defaults)
    operators: tuple[Id, ...] = Field(
        (), description="client certificate CNs that may use a served LKM's admin routes (with "
        "ADMIN_TOKEN, the bearer token, from the environment); docs/architecture.md")
    kms: tuple[KM, ...] = Field(min_length=1)
    links: tuple[Link, ...] = ()
    lkms: tuple[LKM, ...] = Field(min_length=1)
    saes: tuple[SAE, ...] = ()
    traffic: tuple[Traffic, ...] = ()
    outages: tuple[Outage, ...] = ()
    expect: tuple[Annotated[Expectation, _OrBareName()], ...] = ()

    @model_validator(mode="after")
    def _references_resolve(self) -> Scenario:
        errors = reference_errors(self)
        if errors:
            raise PathErrors(errors)
        return self

    def with_overrides(
        self, seed: int | None = None, duration_s: float | str | None = None
    ) -> Scenario:
        """Return a copy with another seed and/or duration (as from the command line: errors
        name ``--seed`` and ``--until``). Outages that would start at or after a shortened end
        are left out of the copy (:meth:`cut_outages` lists them, for a note)."""
        update: dict[str, object] = {}
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ScenarioError([f"--seed: must be a non-negative integer, got {seed!r}"])
            update["seed"] = seed
        if duration_s is not None:
            end_s = update["duration_s"] = _override_duration(duration_s)
            update["outages"] = tuple(o for o in self.outages if o.at_s < end_s)
        copy = self.model_copy(update=update)
        errors = reference_errors(copy)
        if errors:
            raise ScenarioError([error_line("<overrides>", loc, msg) for loc, msg in errors])
        return copy

    def cut_outages(self, duration_s: float | str) -> list[str]:
        """The outages a run shortened to ``duration_s`` leaves out, one line each."""
        end_s = _override_duration(duration_s)
        return [f"outages.{i} ({o.kind} {o.target or 'partition'} at {format_duration(o.at_s)}) "
                f"starts after the end of the run ({format_duration(end_s)}): left out"
                for i, o in enumerate(self.outages) if o.at_s >= end_s]

    def lkm(self, lkm_id: str) -> LKM:
        """Return the LKM called `lkm_id` (KeyError if there is none)."""
        found: LKM = _find(self._by_id, self.lkms, lkm_id, "LKM")
        return found

    def sae(self, sae_id: str) -> SAE:
        """Return the SAE called `sae_id` (KeyError if there is none)."""
        found: SAE = _find(self._by_id, self.saes, sae_id, "SAE")
        return found

    def saes_at(self, lkm_id: str) -> tuple[SAE, ...]:
        """The SAEs homed at `lkm_id`, in scenario order."""
        return self._saes_by_lkm.get(lkm_id, ())

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Scenario:
        """pydantic's copy, without the lookup caches of the original (they may be stale)."""
        copy = super().model_copy(update=update, deep=deep)
        for name in ("_by_id", "_saes_by_lkm", "_settings"):
            copy.__dict__.pop(name, None)
        return copy

    @cached_property
    def _by_id(self) -> dict[tuple[int, str], Any]:
        """(id of the section's tuple, item id) -> item: lookups in a 100,000-user scenario
        must not scan the list (a model is frozen, so the index never goes stale)."""
        index: dict[tuple[int, str], Any] = {}
        for items in (self.lkms, self.saes):
            for item in items:
                index.setdefault((id(items), item.id), item)
        return index

    @cached_property
    def _saes_by_lkm(self) -> dict[str, tuple[SAE, ...]]:
        grouped: dict[str, list[SAE]] = {}
        for sae in self.saes:
            grouped.setdefault(sae.lkm, []).append(sae)
        return {lkm: tuple(saes) for lkm, saes in grouped.items()}

    def lkm_settings(self, lkm_id: str) -> LKMSettings:
        """Return the settings of `lkm_id`: its own overrides, else the scenario defaults."""
        cache = self._settings
        if lkm_id not in cache:
            cache[lkm_id] = self._lkm_settings(lkm_id)
        return cache[lkm_id]

    @cached_property
    def _settings(self) -> dict[str, LKMSettings]:
        return {}

    def _lkm_settings(self, lkm_id: str) -> LKMSettings:
        lkm, base = self.lkm(lkm_id), self.defaults
        sync = base.sync
        if lkm.sync is not None:
            changes = {k: v for k, v in lkm.sync if v is not None}
            sync = sync.model_copy(update=changes)
        return LKMSettings(
            id=lkm.id,
            km=lkm.km,
            pool_size=lkm.pool_size or base.pool_size,
            slice_size=lkm.slice_size or base.slice_size,
            key_size_bits=lkm.key_size_bits or base.key_size_bits,
            max_keys_per_request=lkm.max_keys_per_request or base.max_keys_per_request,
            sync=sync,
            port=lkm.port,
            profile=lkm.profile or base.profile,
            status_shape=lkm.status_shape or base.status_shape,
            sender_quota=lkm.sender_quota or base.sender_quota,
        )

    def sae_pool_size(self, sae_id: str) -> int:
        """Return the size of `sae_id`'s home pool: its own, else its LKM's."""
        sae = self.sae(sae_id)
        return sae.pool_size or self.lkm_settings(sae.lkm).pool_size

    def target_kind(self, target: str) -> str | None:
        """Return what an outage target names: "KM", "LKM", "SAE", "link", or None."""
        return target_kinds(self).get(target)



def _find(index: dict[tuple[int, str], Any], items: tuple[Any, ...], item_id: str,
          what: str) -> Any:
    try:
        return index[(id(items), item_id)]
    except KeyError:
        raise KeyError(f"unknown {what} {item_id!r}") from None


def _override_duration(value: float | str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ScenarioError([f"--until: {exc}"]) from None
    if seconds <= 0:
        raise ScenarioError([f"--until: must be greater than 0, got {value!r}"])
    return seconds


class ScenarioError(Exception):
    """A scenario that cannot be run; `errors` holds one "path: message" line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)

