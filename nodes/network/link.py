"""A QKD link between two KMs: identical key material at both ends, at a rate, into a buffer.

Key becomes usable in post-processing blocks (``block_bits`` of secret key each), not as a
trickle, and each block spends ``auth_block_bits`` of it authenticating the classical channel
(Wegman-Carter). Every relay message that crosses the link spends ``auth_relay_bits`` besides
the bits it carries (one-time pad). Key arriving at a full buffer is discarded and counted.

The buffer is settled lazily: whenever the link is touched, the blocks completed since the last
touch (the rate integrated over the elapsed time, times the degrade fraction and the QBER
factor; nothing while down or aborted) are added, and the time spent in each state is counted
exactly, from the times at which blocks crossed each level. So every link keeps the books::

    initial + generated = relayed + overhead + discarded + final

(``generated`` counts completed blocks; the part of a block still in post-processing is not
in the buffer yet.) Buffer states use QKDNetSim's vocabulary: READY (at least 30 % full),
WARNING (10-30 %), CHARGING (below 10 %), EMPTY (less than one key's worth), plus DOWN (no
classical channel: nothing is made or relayed) and ABORT (QBER above the abort threshold:
nothing is made; key already in the buffer may still be relayed). A change is recorded as a
``link_state`` event when a touch observes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from nodes.network.rates import DecoyBB84
from simulator import Actor, Clock

KEY_BITS_MIN = 8192
STATES = ("READY", "WARNING", "CHARGING", "EMPTY", "DOWN", "ABORT")


@dataclass(frozen=True, slots=True)
class Spend:
    """Take ``bits`` of link key for one relay message (and the message's authentication);
    the reply is True, or False (down, or not enough) with nothing taken."""

    bits: int


@dataclass(frozen=True, slots=True)
class Refund:
    """Give back a relay message the relay could not use (its next hop failed)."""

    bits: int


@dataclass(frozen=True, slots=True)
class SetUp:
    """``cause`` (an outage) holds the link down, or (up) no longer does; the link is up while
    no cause holds it down."""

    up: bool
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Degrade:
    """While ``cause`` lasts, produce only ``fraction`` of the rate (1.0 ends it); degrades
    that overlap multiply."""

    fraction: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class SetQber:
    """While ``cause`` lasts the link's QBER is ``qber`` (None ends it); the highest active one
    holds. The model gives the rate that is left; above the abort threshold there is none."""

    qber: float | None
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Level:
    """Ask for the buffer level in bits."""


@dataclass(frozen=True, slots=True)
class Available:
    """Ask how many bits one relay message could carry now (None while down)."""


@dataclass(frozen=True, slots=True)
class GetAccount:
    """Ask for the link's books (:meth:`QKDLink.account`)."""


@dataclass(frozen=True, slots=True)
class SetLatency:
    """While ``cause`` lasts, messages crossing this link take ``delay_s`` longer (0 ends it);
    delays that overlap add up."""

    delay_s: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class GetLatency:
    pass


PROPAGATION_S_PER_KM = 5e-6  # light in fibre (group index ~1.47): 4.9 us/km, rounded


def least_hop_delay_s(length_km: float, processing_s: float) -> float:
    """The least a relay message takes to cross a link: its fibre, and the sending KM's
    processing (latency outages only ever add to it)."""
    return PROPAGATION_S_PER_KM * length_km + processing_s


RateSteps = Sequence[tuple[float, float]]  # (from time s, rate bps), sorted by time


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a link is made of (the builder derives it from the scenario)."""

    link_id: str
    steps: RateSteps
    buffer_bits: int
    initial_bits: int = 0
    warmup_s: float = 0.0
    block_bits: int = 100_000
    auth_block_bits: int = 256
    auth_relay_bits: int = 128
    model: DecoyBB84 | None = None  # a physical link: QBER, and what a qber_rise does to it
    length_km: float = 0.0
    model_name: str = "fixed"


def _hold(active: dict[str, float], cause: str, value: float, on: bool) -> None:
    """Start (``on``) or end one cause's effect."""
    if on:
        active[cause] = value
    else:
        active.pop(cause, None)


def generated_bits(steps: RateSteps, t0: float, t1: float) -> float:
    """The integral of a piecewise-constant rate over [t0, t1] (before the first step, the
    first step's rate)."""
    total = 0.0
    for i, (start, rate) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else math.inf
        lo, hi = max(t0, start if i else -math.inf), min(t1, end)
        if hi > lo:
            total += rate * (hi - lo)
    return total


def time_to_make(steps: RateSteps, t0: float, bits: float, scale: float) -> float:
    """The time t >= t0 at which ``scale`` times the rate, integrated from t0, reaches ``bits``
    (inf if it never does)."""
    if bits <= 0:
        return t0
    left = bits
    for i, (start, rate) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else math.inf
        lo = max(t0, start if i else -math.inf)
        if end <= lo:
            continue
        speed = rate * scale
        if speed > 0:
            span = left / speed
            if lo + span <= end:
                return lo + span
            left -= speed * (end - lo)
    return math.inf


class QKDLink(Actor):
    bits: float  # the buffer's level (whole bits, kept as a float for the rate arithmetic)
    initial_bits: float
    pending_bits: float  # of the block in post-processing, not usable yet

    def __init__(self, spec: LinkSpec, clock: Clock, record: Callable[..., None]) -> None:
        super().__init__(f"link:{spec.link_id}")
        self.spec = spec
        self.link_id = spec.link_id
        self.steps = tuple(spec.steps)
        self.capacity_bits = float(spec.buffer_bits)
        self.net_block_bits = spec.block_bits - spec.auth_block_bits
        self.clock = clock
        self.record = record
        self.up = True
        self.fraction = 1.0
        self.qber_factor = 1.0
        self.aborted = False
        self._downs: set[str] = set()  # the causes holding the link down
        self._degrades: dict[str, float] = {}
        self._qbers: dict[str, float] = {}
        self._delays: dict[str, float] = {}
        self.qber_peak = None if spec.model is None else spec.model.qber(spec.length_km)
        self.delay_s = 0.0
        self._reset_books(float(min(spec.initial_bits, spec.buffer_bits)))
        if spec.warmup_s > 0:  # pre-run generation; what it leaves is the initial fill
            self._settled_s = clock.now() - spec.warmup_s
            self._settle()
            pending: float = self.pending_bits  # a block part-made in the warm-up carries on
            self._reset_books(self.bits)
            self.pending_bits = pending
        self.state = self._level_state()

    def _reset_books(self, level: float) -> None:
        self.bits = level
        self.initial_bits = level
        self.pending_bits = 0.0
        self.generated_bits = 0
        self.relayed_bits = 0
        self.overhead_bits = 0
        self.discarded_bits = 0.0
        self.state_s = dict.fromkeys(STATES, 0.0)
        self.empty_s = 0.0
        self._settled_s = self.clock.now()

    async def receive(self, message: object) -> Any:
        self._settle()
        self._observe()  # whatever the touch finds (a refill seen by a Level, say) is recorded
        if isinstance(message, Spend):
            return self._spend(message.bits)
        if isinstance(message, Available):
            return self.available()
        if isinstance(message, Refund):
            self._refund(message.bits)
        elif isinstance(message, SetUp):
            (self._downs.discard if message.up else self._downs.add)(message.cause)
            self.up = not self._downs
        elif isinstance(message, Degrade):
            _hold(self._degrades, message.cause, message.fraction, message.fraction < 1.0)
            self.fraction = math.prod(self._degrades[c] for c in sorted(self._degrades))
        elif isinstance(message, SetQber):
            _hold(self._qbers, message.cause, message.qber or 0.0, message.qber is not None)
            self._set_qber(max(self._qbers.values()) if self._qbers else None)
        elif isinstance(message, Level):
            return self.bits
        elif isinstance(message, GetAccount):
            return self.account()
        elif isinstance(message, SetLatency):
            _hold(self._delays, message.cause, message.delay_s, message.delay_s > 0)
            self.delay_s = sum(self._delays[c] for c in sorted(self._delays))
        elif isinstance(message, GetLatency):
            return self.delay_s
        else:
            raise TypeError(f"unexpected message {type(message).__name__}")
        self._observe()
        return None

    # -- spending ----------------------------------------------------------------------------

    def available(self) -> int | None:
        if not self.up:
            return None
        return max(0, math.floor(self.bits) - self.spec.auth_relay_bits)

    def _spend(self, bits: int) -> bool:
        cost = bits + self.spec.auth_relay_bits
        if not self.up or self.bits < cost:
            return False
        self.bits -= cost
        self.relayed_bits += bits
        self.overhead_bits += self.spec.auth_relay_bits
        self._observe()
        return True

    def _refund(self, bits: int) -> None:
        back = bits + self.spec.auth_relay_bits
        self.relayed_bits -= bits
        self.overhead_bits -= self.spec.auth_relay_bits
        room = self.capacity_bits - self.bits
        self.bits += min(room, back)
        self.discarded_bits += max(0.0, back - room)

    # -- outages -----------------------------------------------------------------------------

    def _set_qber(self, qber: float | None) -> None:
        model = self.spec.model
        if model is None:
            raise ValueError(f"link {self.link_id} has no physical model: no QBER to raise")
        length = self.spec.length_km
        if qber is None:
            self.qber_factor, self.aborted = 1.0, False
            return
        nominal = model.rate_bps(length)
        raised = model.rate_bps(length, model.misalignment_for(length, qber))
        self.qber_peak = max(self.qber_peak or 0.0, qber)
        self.aborted = qber > model.abort_qber
        self.qber_factor = 0.0 if self.aborted or nominal <= 0 else raised / nominal

    # -- making key --------------------------------------------------------------------------

    def _scale(self) -> float:
        if not self.up or self.aborted:
            return 0.0
        return self.fraction * self.qber_factor

    def _settle(self) -> None:
        now = self.clock.now()
        if now > self._settled_s:
            self._advance(self._settled_s, now)
        self._settled_s = now

    def _advance(self, t0: float, t1: float) -> None:
        """Add the blocks completed in [t0, t1] and count the time spent in each state."""
        scale = self._scale()
        block = self.spec.block_bits
        made = scale * generated_bits(self.steps, t0, t1) if scale > 0 else 0.0
        blocks = math.floor((self.pending_bits + made) / block)
        done, since = 0, t0
        if blocks:
            for level in self._levels_above():
                need = max(0, math.ceil((level - self.bits) / self.net_block_bits))
                if done + need > blocks:
                    break
                at = time_to_make(self.steps, t0, (done + need) * block - self.pending_bits,
                                  scale)
                self._count_time(since, min(at, t1))
                self._add_blocks(need)
                done, since = done + need, min(at, t1)
            self._add_blocks(blocks - done)
        self._count_time(since, t1)
        self.pending_bits = self.pending_bits + made - blocks * block

    def _levels_above(self) -> list[float]:
        """The buffer levels at which the state changes (or the buffer is full), above now."""
        cap = self.capacity_bits
        marks = sorted({KEY_BITS_MIN, 0.1 * cap, 0.3 * cap, cap})
        return [m for m in marks if m <= cap and m > self.bits]

    def _add_blocks(self, count: int) -> None:
        if count <= 0:
            return
        self.generated_bits += count * self.spec.block_bits
        self.overhead_bits += count * self.spec.auth_block_bits
        net = count * self.net_block_bits
        room = self.capacity_bits - self.bits
        self.bits += min(room, net)
        self.discarded_bits += max(0.0, net - room)

    def _count_time(self, t0: float, t1: float) -> None:
        if t1 <= t0:
            return
        self.state_s[self._current_state()] += t1 - t0
        if self.bits < KEY_BITS_MIN:
            self.empty_s += t1 - t0

    def _level_state(self) -> str:
        share = self.bits / self.capacity_bits
        return ("EMPTY" if self.bits < KEY_BITS_MIN else "CHARGING" if share < 0.1 else
                "WARNING" if share < 0.3 else "READY")

    def _current_state(self) -> str:
        if not self.up:
            return "DOWN"
        if self.aborted:
            return "ABORT"
        return self._level_state()

    def _observe(self) -> None:
        state = self._current_state()
        if state != self.state:
            self.state = state
            self.record("link_state", self.link_id, state=state, bits=round(self.bits))

    # -- the books ---------------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        """The link's books since t = 0 (see the module docstring), as summary.json lists
        them."""
        generated = self.generated_bits
        used = self.relayed_bits + self.overhead_bits
        return {
            "link": self.link_id, "model": self.spec.model_name,
            "length_km": self.spec.length_km if self.spec.model is not None else None,
            "buffer_bits": int(self.capacity_bits),
            "initial_bits": round(self.initial_bits), "generated_bits": generated,
            "relayed_bits": self.relayed_bits, "overhead_bits": self.overhead_bits,
            "discarded_bits": round(self.discarded_bits), "final_bits": round(self.bits),
            "pending_bits": round(self.pending_bits),
            "utilisation": round(used / generated, 6) if generated else None,
            "time_empty_s": round(self.empty_s, 6),
            "qber": None if self.spec.model is None else round(
                self.spec.model.qber(self.spec.length_km), 6),
            "qber_peak": None if self.qber_peak is None else round(self.qber_peak, 6),
            "time_in_state_s": {s: round(v, 6) for s, v in self.state_s.items() if v},
        }
