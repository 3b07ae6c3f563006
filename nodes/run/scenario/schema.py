"""Scenario files, field by field: the frozen models of each part of a scenario (DESIGN.md
"A scenario"). Each model checks what it can alone; what involves several parts is
:mod:`.checks`, and the whole scenario is :mod:`.model`.

Durations are written "90s", "6h", "1d12h" and become float seconds (`*_s` attributes).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    model_validator,
)
from pydantic_core import CoreSchema

from nodes.keynode import RESERVED_IDS
from nodes.run.outages import OUTAGES
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

Ratio = Annotated[float, Field(ge=0, lt=1)]
SyncReason = Literal["scheduled", "threshold", "emergency", "manual", "retry", "any"]
Profile = Literal["etsi", "qumail"]
StatusShape = Literal["auto", "etsi", "seed"]
OutageKind = Literal["down", "crash", "degrade", "partition", "latency", "qber_rise"]
# the outage kinds are the table's (nodes/run/outages.py); tests hold the two equal
assert set(get_args(OutageKind)) == {kind for kind, _ in OUTAGES}


def _whole_bytes(bits: int) -> int:
    if bits % 8:
        raise ValueError(f"key size must be a whole number of bytes (a multiple of 8), got {bits}")
    return bits


def _not_reserved(sae_id: str) -> str:
    if sae_id in RESERVED_IDS:
        raise ValueError(f"{sae_id!r} is a reserved word of the LKM API, not an SAE ID")
    return sae_id


KeySizeBits = Annotated[PositiveCount, AfterValidator(_whole_bytes)]


class SyncPolicy(Frozen):
    """The seed's hybrid sync: scheduled every `interval`, below `threshold` and `emergency`."""

    interval_s: PositiveSeconds = Field(86400.0, alias="interval")
    threshold: Ratio = 0.10
    emergency: Ratio = 0.05

    @model_validator(mode="after")
    def _emergency_below_threshold(self) -> SyncPolicy:
        if self.emergency > self.threshold:
            raise PathErrors([(("emergency",), f"must not exceed threshold ({self.threshold})")])
        return self


class SyncOverride(Frozen):
    """Per-LKM changes to the default sync policy; unset fields keep the defaults."""

    interval_s: PositiveSeconds | None = Field(None, alias="interval")
    threshold: Ratio | None = None
    emergency: Ratio | None = None


class SenderQuota(Frozen):
    """How much of one receiver's pool one sender may take: a token bucket of `burst` keys
    that refills at `keys_per_hour` (simulated time; wall time when served)."""

    keys_per_hour: float = Field(gt=0)
    burst: PositiveCount | None = Field(
        None, description="the most keys a sender may take at once (default: an hour's worth)")


class Defaults(Frozen):
    """Settings every LKM gets unless it overrides them."""

    pool_size: PositiveCount = 1000
    slice_size: PositiveCount | None = Field(
        None, description="keys a sender's LKM keeps of a remote receiver's pool (default: half "
        "the pool)")
    key_size_bits: KeySizeBits = 8192
    max_keys_per_request: PositiveCount = 100
    profile: Profile = Field(
        "etsi", description="key-manager semantics: strict ETSI GS QKD 014, or `qumail` "
        "(QuMail's own key manager's: a master may read its key back once, not-found is 404; "
        "README, 'Point QuMail at a simulated network')")
    status_shape: StatusShape = Field(
        "auto", description="where status puts the pool's own fields: `status_extension` only "
        "(etsi), also the top level (seed), or by the caller's mode (auto: top level for an "
        "X-SAE-ID caller; docs/conformance.md)")
    sync: SyncPolicy = Field(default_factory=SyncPolicy)
    sender_quota: SenderQuota | None = Field(
        None, description="a per-sender quota on each receiver's pool: a sender over it gets "
        "429 with Retry-After (docs/architecture.md, 'Who may do what')")


class KM(Frozen):
    """A (remote) key manager; generates key material at `key_rate_bps`."""

    id: Id
    key_rate_bps: float = Field(1_000_000.0, gt=0)


class LKM(Frozen):
    """A local key manager attached to KM `km`; unset settings come from `defaults`."""

    id: Id
    km: Id
    pool_size: PositiveCount | None = None
    slice_size: PositiveCount | None = None
    key_size_bits: KeySizeBits | None = None
    max_keys_per_request: PositiveCount | None = None
    profile: Profile | None = None
    status_shape: StatusShape | None = None
    sync: SyncOverride | None = None
    sender_quota: SenderQuota | None = None
    port: int | None = Field(None, ge=1, le=65535, strict=True)


class SAE(Frozen):
    """A user (QuMail account) whose home pool lives at LKM `lkm`."""

    id: Annotated[Id, AfterValidator(_not_reserved)]
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    lkm: Id
    pool_size: PositiveCount | None = None


class MailTraffic(Frozen):
    """`from_sae` sends `mails_per_hour` mails of `mail_bytes` each to `to_sae`."""

    from_sae: Id = Field(alias="from")
    to_sae: Id = Field(alias="to")
    mails_per_hour: float = Field(gt=0)
    mail_bytes: PositiveCount


class ReplayTraffic(Frozen):
    """Requests replayed from a recorded trace; `load_scenario` resolves a relative path
    against the scenario file's directory."""

    replay: str = Field(min_length=1)


def _traffic_tag(data: Any) -> str:
    has_replay = isinstance(data, dict) and "replay" in data
    return "<replay>" if has_replay or isinstance(data, ReplayTraffic) else "<mail>"


Traffic = Annotated[
    Annotated[MailTraffic, Tag("<mail>")] | Annotated[ReplayTraffic, Tag("<replay>")],
    Discriminator(_traffic_tag),
]


class Outage(Frozen):
    """A fault applied at `at` for `for` (absent: until the end of the run)."""

    at_s: Seconds = Field(alias="at")
    kind: OutageKind
    target: str | None = Field(None, description="a KM, a link 'KM1-KM2' or an LKM")
    for_s: PositiveSeconds | None = Field(None, alias="for")
    fraction: float | None = Field(None, gt=0, le=1, description="degrade: share of the rate kept")
    groups: tuple[tuple[Id, ...], ...] | None = Field(
        None, min_length=1, description="partition: KM groups; unlisted KMs form one more group"
    )
    delay_s: PositiveSeconds | None = Field(None, alias="delay")
    qber: float | None = Field(None, gt=0, lt=0.5,
                               description="qber_rise: the QBER the link's key is made at")

    @model_validator(mode="after")
    def _fields_suit_kind(self) -> Outage:
        wanted = {"fraction": "degrade", "groups": "partition", "delay_s": "latency",
                  "qber": "qber_rise"}
        aliases = {"delay_s": "delay"}
        errors: list[tuple[Loc, str]] = []
        for name, kind in wanted.items():
            present = getattr(self, name) is not None
            if present != (self.kind == kind):
                why = "only applies to" if present else "required for"
                errors.append(((aliases.get(name, name),), f"{why} kind '{kind}'"))
        if (self.target is None) != (self.kind == "partition"):
            why = "not used by" if self.target is not None else "required for"
            errors.append((("target",), f"{why} kind '{self.kind}'"))
        if errors:
            raise PathErrors(errors)
        return self


class SyncCount(Frozen):
    """Argument of min_syncs / max_syncs: how many syncs of `reason` ("any": all reasons)."""

    reason: SyncReason
    count: Count


class SenderCount(Frozen):
    """Argument of max_failed_sends for one sender: at most `count` failed sends from `sender`."""

    count: Count
    sender: Id


BARE_EXPECTATIONS = ("no_key_reuse", "all_received_keys_match")


class Expectation(Frozen):
    """One expectation: a bare name or a one-key mapping, kept in its YAML shape.

    Exactly one field is set; `kind`, `count`, `reason` and `duration_s` give a uniform view.
    """

    no_key_reuse: Literal[True] | None = None
    all_received_keys_match: Literal[True] | None = None
    max_failed_sends: Count | SenderCount | None = Field(
        None, description="a bound on failed sends: a count for all senders, or "
        "{count, sender} for one")
    min_syncs: SyncCount | None = None
    max_syncs: SyncCount | None = None
    pool_never_empty_longer_than: Seconds | None = None
    recovered_within: Seconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        names = tuple(cls.model_fields)
        if isinstance(data, str):
            if data in BARE_EXPECTATIONS:
                return {data: True}
            if data in names:
                raise ValueError(f"expectation {data!r} needs a value, e.g. {{{data}: ...}}")
            raise ValueError(f"unknown expectation {data!r} (known: {', '.join(names)})")
        if isinstance(data, dict):
            if len(data) != 1:
                got = ", ".join(map(str, data)) or "none"
                raise ValueError(f"an expectation is a name or a one-key mapping (got keys {got})")
            (name,) = data
            if name not in names:
                raise ValueError(f"unknown expectation {name!r} (known: {', '.join(names)})")
        return data

    @property
    def kind(self) -> str:
        """The expectation's name, e.g. "max_failed_sends"."""
        return next(n for n in type(self).model_fields if getattr(self, n) is not None)

    @property
    def count(self) -> int | None:
        """The bound of max_failed_sends, min_syncs and max_syncs."""
        syncs = self.min_syncs or self.max_syncs
        failed = self.max_failed_sends
        if isinstance(failed, SenderCount):
            return failed.count
        return syncs.count if syncs else failed

    @property
    def sender(self) -> str | None:
        """The one sender a max_failed_sends counts, or None for all."""
        failed = self.max_failed_sends
        return failed.sender if isinstance(failed, SenderCount) else None

    @property
    def reason(self) -> str | None:
        """The sync reason of min_syncs / max_syncs."""
        syncs = self.min_syncs or self.max_syncs
        return syncs.reason if syncs else None

    @property
    def duration_s(self) -> float | None:
        """The bound of pool_never_empty_longer_than and recovered_within."""
        if self.recovered_within is not None:
            return self.recovered_within
        return self.pool_never_empty_longer_than


class _OrBareName:
    """JSON schema of an expectation list item: a bare name or the one-key mapping."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        mapping = handler(schema)
        handler.resolve_ref_schema(mapping).update(minProperties=1, maxProperties=1)
        return {"anyOf": [{"type": "string", "enum": list(BARE_EXPECTATIONS)}, mapping]}
