"""The seed's hybrid sync policy as a pure scheduler: which pool syncs next, and why.

No clock, no actors, no I/O: the LKM tells the :class:`SyncScheduler` what it observed (a pool's
level after a delivery, a timer, a manual request, a finished sync) with the time, and gets
plain data back (:class:`SyncOrder`) to carry out. Per pool or slice:

- *scheduled*: every ``interval_s`` (the LKM's timer asks for it);
- *threshold*: a pool below ``threshold`` of its limit; *emergency*: below ``emergency``;
- *manual*: on request;
- *retry*: a pool whose last sync failed (unreachable, no_key or error) tries again after a
  backoff, ``retry_s`` doubling per failure up to ``retry_max_s`` (:meth:`backoff_s`; the LKM
  adds jitter and sets the timer), so it refills once its KM or link is back, with no traffic.

A sync tops the pool up to its limit. Orders are carried out one at a time, in the order they
were queued, by one worker. After an ``unreachable`` or ``no_key`` outcome (the KMs answered
but the links held no key to relay) a pool's threshold and emergency syncs wait ``retry_s``
(scheduled, manual and retry ones do not).

Invariants (checked by :meth:`SyncScheduler.check`):

- a pool is *in flight* exactly while one order for it is queued or being carried out, so a
  pool never has two;
- the worker is busy exactly while it carries out an order; queued orders wait for it, and it
  takes the next one as it finishes (:meth:`SyncScheduler.finished` hands it over);
- ``retry_after`` holds only pools whose last sync was unreachable or found no link key, and
  only until a sync of theirs succeeds.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from nodes.keynode.config import SyncPolicy

if TYPE_CHECKING:
    from nodes.keynode.store import PoolStatus

SYNC_REASONS = ("scheduled", "threshold", "emergency", "manual", "retry")
RETRY_S = 300.0  # the first wait after a failed sync, doubling per failure...
RETRY_MAX_S = 3600.0  # ...up to an hour
FAILED_OUTCOMES = ("unreachable", "no_key", "error")


class PoolLevel(NamedTuple):
    """What the policy needs of a pool: whose it is, where it is homed, how full it is (one is
    made per delivery: a named tuple is the cheapest immutable record)."""

    sae_id: str
    available_keys: int
    limit: int
    key_size_bits: int
    home_lkm: str | None = None  # a slice of a pool homed there; None: a home pool

    @classmethod
    def of(cls, pool: PoolStatus) -> PoolLevel:
        return cls(pool.sae_id, pool.available_keys, pool.pool_size_limit, pool.key_size_bits,
                   pool.home_lkm)


@dataclass(frozen=True, slots=True)
class SyncOrder:
    """One pool's top-up, to be carried out: fetch ``asked`` keys for ``sae_id``'s pool."""

    ticket: int
    reason: str
    sae_id: str
    asked: int
    key_bytes: int
    home_lkm: str | None = None


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """How an order ended: ok | unreachable | no_key | error | aborted, and the keys it brought."""

    ticket: int
    sae_id: str
    outcome: str
    keys_received: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"sae_id": self.sae_id, "outcome": self.outcome,
                "keys_received": self.keys_received}


@dataclass
class SyncScheduler:
    policy: SyncPolicy
    retry_s: float = RETRY_S
    retry_max_s: float = RETRY_MAX_S
    km_available: bool = True
    next_scheduled_s: float | None = None
    _queue: deque[SyncOrder] = field(default_factory=deque)
    _in_flight: set[str] = field(default_factory=set)
    _current: SyncOrder | None = None
    _retry_after: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _tickets: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- what the LKM observed -------------------------------------------------------------

    def level(self, pool: PoolLevel, now_s: float) -> SyncOrder | None:
        """A pool's level after it changed: a threshold or emergency order, or None."""
        if self._retry_after.get(pool.sae_id, -math.inf) > now_s:
            return None
        share = pool.available_keys / max(pool.limit, 1)
        reason = ("emergency" if share < self.policy.emergency else
                  "threshold" if share < self.policy.threshold else None)
        return None if reason is None else self.request(reason, pool)

    def request(self, reason: str, pool: PoolLevel) -> SyncOrder | None:
        """Queue a top-up of ``pool``; None if it is full or already in flight."""
        if reason not in SYNC_REASONS:
            raise ValueError(f"unknown sync reason {reason!r}")
        asked = pool.limit - pool.available_keys
        if asked <= 0 or pool.sae_id in self._in_flight:
            return None
        order = SyncOrder(next(self._tickets), reason, pool.sae_id, asked,
                          pool.key_size_bits // 8, pool.home_lkm)
        self._in_flight.add(pool.sae_id)
        self._queue.append(order)
        return order

    def scheduled_at(self, next_s: float) -> None:
        self.next_scheduled_s = next_s

    # -- the worker ----------------------------------------------------------------------------

    @property
    def worker_busy(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> SyncOrder | None:
        """The order being carried out."""
        return self._current

    def take(self) -> SyncOrder | None:
        """The next order for an idle worker to carry out (None: nothing is queued)."""
        assert self._current is None, "the worker carries out one order at a time"
        if not self._queue:
            return None
        self._current = self._queue.popleft()
        return self._current

    def finished(self, order: SyncOrder, outcome: str, now_s: float,
                 received: int | None = None) -> SyncOrder | None:
        """``order`` ended with ``outcome`` (and ``received`` keys, if known); the worker's next
        order, or None (it stops). An ok that brought nothing retries like a failure."""
        assert self._current is not None and self._current.ticket == order.ticket
        self._current = None
        self._in_flight.discard(order.sae_id)
        empty = outcome == "ok" and received == 0 and order.asked > 0
        if outcome in FAILED_OUTCOMES or empty:
            self._failures[order.sae_id] = self._failures.get(order.sae_id, 0) + 1
        elif outcome == "ok":
            self._failures.pop(order.sae_id, None)
        if outcome == "ok":
            self.km_available = True
            self._retry_after.pop(order.sae_id, None)
        elif outcome in ("unreachable", "no_key"):  # only unreachable says the KM is away
            self.km_available = self.km_available and outcome != "unreachable"
            self._retry_after[order.sae_id] = now_s + self.retry_s
        return self.take()

    def backoff_s(self, sae_id: str) -> float | None:
        """How long a pool whose last sync failed waits before it retries (None: it did not
        fail): ``retry_s`` doubling per failure in a row, at most ``retry_max_s``."""
        failures = self._failures.get(sae_id)
        if not failures:
            return None
        return float(min(self.retry_s * 2 ** (failures - 1), self.retry_max_s))

    def forget(self, sae_id: str) -> None:
        """The pool is gone: no retry is owed to it."""
        self._failures.pop(sae_id, None)
        self._retry_after.pop(sae_id, None)

    def drop_all(self) -> list[SyncOrder]:
        """Forget every order (the LKM stops): the queued ones and the one being carried out."""
        left = ([self._current] if self._current is not None else []) + list(self._queue)
        self._queue.clear()
        self._in_flight.clear()
        self._current = None
        return left

    def check(self) -> None:
        """Raise AssertionError if an invariant of the module docstring does not hold."""
        pending = [o.sae_id for o in self._queue] + \
            ([self._current.sae_id] if self._current is not None else [])
        assert sorted(pending) == sorted(self._in_flight), (pending, self._in_flight)
        assert len(set(pending)) == len(pending), pending
