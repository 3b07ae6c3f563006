"""Messages exchanged with the key-node actors: frozen, slotted, picklable dataclasses.

The aiohttp handlers translate each HTTP request into one of these and ``ask`` the LKM actor;
timers and the LKM itself ``tell`` it the sync messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Register:
    sae_id: str
    user_email: str | None
    display_name: str | None = None
    initial_pool_size: int | None = None


@dataclass(frozen=True, slots=True)
class GetStatus:
    """ETSI Get status: ``caller`` is the master, ``slave`` the path SAE."""

    caller: str
    slave: str


@dataclass(frozen=True, slots=True)
class GetKeys:
    """ETSI Get key (enc_keys): the caller takes keys from the slave's (receiver's) pool."""

    caller: str
    slave: str
    number: int = 1
    size_bits: int | None = None
    additional_slaves: tuple[str, ...] = ()
    extension_mandatory: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class GetKeysWithIds:
    """ETSI Get key with key IDs (dec_keys): the caller is the slave, ``master`` the path SAE."""

    caller: str
    master: str
    key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refill:
    sae_id: str
    keys_to_add: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteUser:
    sae_id: str


@dataclass(frozen=True, slots=True)
class ListPools:
    """Every pool's view; with ``levels_only``, just ``(sae_id, available_keys)`` pairs in
    SAE order (what a run samples, without building a view per pool)."""

    levels_only: bool = False


@dataclass(frozen=True, slots=True)
class GetKmStatus:
    pass


@dataclass(frozen=True, slots=True)
class Sync:
    """Top pools up from the key manager. ``users`` empty means: every pool not full. The
    reply is the tickets of the orders queued; with ``wait``, the reply comes when they have all
    ended: one ``{"sae_id", "outcome", "keys_received"}`` per pool."""

    reason: str
    users: tuple[str, ...] = field(default=())
    wait: bool = False


@dataclass(frozen=True, slots=True)
class RetrySync:
    """An LKM's own timer: the pool whose sync failed tries again (nothing if it is gone)."""

    sae_id: str


@dataclass(frozen=True, slots=True)
class MarkConsumed:
    """QuMail's mark_consumed: erase a delivered key its master or slave will not read."""

    caller: str
    key_id: str


@dataclass(frozen=True, slots=True)
class ConsumeCopies:
    """From another LKM: keys read or marked consumed there; erase the copies held here."""

    key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Audit:
    """Counts of key rows by state and of key material stored twice (for expectations)."""


@dataclass(frozen=True, slots=True)
class AddRemote:
    """Know ``sae_id``, homed at ``home_lkm``, and keep a slice of its pool here."""

    sae_id: str
    home_lkm: str
    slice_size: int
    user_email: str | None = None


@dataclass(frozen=True, slots=True)
class ShipSlice:
    """At the owner's home LKM: reserve up to ``count`` keys for a slice at ``to_lkm``."""

    owner: str
    to_lkm: str
    count: int


@dataclass(frozen=True, slots=True)
class UnshipSlice:
    """At the owner's home LKM: the relay failed, take these shipped keys back."""

    owner: str
    key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LaunchSync:
    """Start the sync worker on the orders queued (told by the LKM's own timer)."""


@dataclass(frozen=True, slots=True)
class SyncDone:
    """The sync worker carried out ``order`` (in a background task): store what came, log the
    outcome. The reply is the worker's next order, or None."""

    order: object  # a nodes.keynode.sync.SyncOrder
    start_s: float
    outcome: str
    materials: tuple[bytes, ...] = ()
    keys: tuple[object, ...] = ()
    error: str | None = None


class Observer(Protocol):
    """What an LKM tells the run about itself (events such as ``sync`` and ``delivery``)."""

    def __call__(self, kind: str, node: str, **data: Any) -> None: ...


def ignore(kind: str, node: str, **data: Any) -> None:
    """The default observer: records nothing."""
