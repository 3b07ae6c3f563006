"""Per-sender quotas on a receiver's pool: how much of one user's keys one sender may take.

The sender takes keys FROM the receiver's pool, so without a bound any registered SAE can drain
anyone's pool by asking for keys addressed to them, and every other sender to that user then
fails. A quota is a token bucket per (sender, receiver) pair: it holds at most ``burst`` keys and
refills at ``keys_per_hour``, in the node's own time (virtual in a simulation, wall served). A
request for more keys than the bucket holds is refused with 429 and ``Retry-After`` (when it
would pass), before the store is touched; keys are charged when they are delivered. Two requests
checked in one batch may both pass and overdraw the bucket by one request: the next ones then
wait longer, so the rate over time holds.

Memory: a pair is kept only while its bucket is below full (a full bucket is what a missing one
means), so the table holds the senders active within about ``burst / rate`` of now.
"""

from __future__ import annotations

from nodes.keynode.config import SenderQuota
from nodes.keynode.errors import QKDError, TooManyRequests

HOUR_S = 3600.0
_SWEEP_EVERY = 1024  # charges between sweeps of the buckets that have refilled


class SenderBuckets:
    """The token buckets of one LKM's senders, by (sender, receiver)."""

    def __init__(self, quota: SenderQuota) -> None:
        self.quota = quota
        self.rate_per_s = quota.keys_per_hour / HOUR_S
        self._level: dict[tuple[str, str], tuple[float, float]] = {}  # -> (keys, at t_s)
        self._charges = 0

    def refusal(self, sender: str, receiver: str, keys: int, now_s: float) -> QKDError | None:
        """Why ``sender`` may not take ``keys`` of ``receiver``'s pool now (429 with the wait),
        or None. A request for more than ``burst`` keys is the request's bounds' to refuse."""
        held = self.held(sender, receiver, now_s)
        if keys <= held:
            return None
        error = TooManyRequests(
            f"over the sender quota of {self.quota.keys_per_hour:g} keys per hour of this "
            f"receiver's pool", keys_requested=keys, keys_allowed_now=int(held))
        error.retry_after_s = (keys - held) / self.rate_per_s
        return error

    def held(self, sender: str, receiver: str, now_s: float) -> float:
        """The keys ``sender`` may take of ``receiver``'s pool at ``now_s``."""
        level = self._level.get((sender, receiver))
        if level is None:
            return float(self.quota.burst)
        keys, at_s = level
        return min(float(self.quota.burst), keys + (now_s - at_s) * self.rate_per_s)

    def charge(self, sender: str, receiver: str, keys: int, now_s: float) -> None:
        """``sender`` took ``keys`` of ``receiver``'s pool at ``now_s``."""
        self._level[(sender, receiver)] = (self.held(sender, receiver, now_s) - keys, now_s)
        self._charges += 1
        if self._charges % _SWEEP_EVERY == 0:
            self._sweep(now_s)

    def _sweep(self, now_s: float) -> None:
        full = [pair for pair in self._level if self.held(*pair, now_s) >= self.quota.burst]
        for pair in full:
            del self._level[pair]
