"""The sync worker: carries an LKM's sync orders out, one at a time, outside its mailbox.

It runs as a task of the LKM (counted work, cancelled when the LKM stops), fetches from the
:class:`~nodes.keynode.supply.KeySupply`, and hands each result back to the LKM as a
:class:`~nodes.keynode.messages.SyncDone` message; the reply (:class:`SyncNext`) is its next
order. It never touches the LKM's state. Relayed keys the LKM did not take (it stopped first,
or the slice is gone) go back where they came from, so a crash mid-sync loses no key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable

from nodes.keynode.errors import KMUnreachable, NoLinkKey
from nodes.keynode.messages import SyncDone
from nodes.keynode.supply import KeySupply, Shipment
from nodes.keynode.sync import SyncOrder, SyncOutcome
from simulator import ActorRef, ActorStopped, Clock, Promise


@dataclass(frozen=True, slots=True)
class SyncNext:
    """The reply to SyncDone: the worker's next order, and whether the LKM kept the keys."""

    order: SyncOrder | None
    kept: bool = True


class SyncWorker:
    def __init__(self, lkm_id: str, lkm: ActorRef[Any], supply: KeySupply, clock: Clock) -> None:
        self.lkm_id = lkm_id
        self.lkm = lkm
        self.supply = supply
        self.clock = clock

    async def run(self, order: SyncOrder | None) -> None:
        while order is not None:
            done, shipment = await self._carry_out(order)
            reply = self.lkm.ask(done)
            try:
                answer: SyncNext = await reply
            except ActorStopped:  # the LKM stopped before it took them
                if shipment is not None:
                    await self.supply.return_slice(shipment)
                return
            except asyncio.CancelledError:
                if shipment is not None and not _answered(reply):
                    await self.supply.return_slice(shipment)
                raise
            if shipment is not None and not answer.kept:
                await self.supply.return_slice(shipment)
            order = answer.order

    async def _carry_out(self, order: SyncOrder) -> tuple[SyncDone, Shipment | None]:
        """Fetch what the order asks for; any failure is an outcome, named."""
        start_s = self.clock.now()
        try:
            if order.home_lkm is not None:
                shipment = await self.supply.fetch_slice(self.lkm_id, order.sae_id,
                                                         order.home_lkm, order.asked)
                return SyncDone(order, start_s, "ok", keys=shipment.keys), shipment
            materials = await self.supply.fetch(self.lkm_id, order.sae_id, order.asked,
                                                order.key_bytes)
            return SyncDone(order, start_s, "ok", materials=tuple(materials)), None
        except NoLinkKey:
            return SyncDone(order, start_s, "no_key"), None
        except KMUnreachable:
            return SyncDone(order, start_s, "unreachable"), None
        except Exception as error:  # noqa: BLE001 - any failure of a fetch is an outcome
            return SyncDone(order, start_s, "error",
                            error=f"{type(error).__name__}: {error}"), None


def _answered(reply: Awaitable[Any]) -> bool:
    """Did the LKM handle the SyncDone (so it holds the keys)?"""
    return (isinstance(reply, asyncio.Future) and reply.done() and not reply.cancelled()
            and reply.exception() is None)


@dataclass
class SyncWait:
    """A waiting manual sync: its reply, once every one of its orders has an outcome."""

    promise: Promise
    outcomes: dict[int, SyncOutcome | None]

    def settle(self, outcome: SyncOutcome) -> bool:
        if outcome.ticket in self.outcomes:
            self.outcomes[outcome.ticket] = outcome
        if any(o is None for o in self.outcomes.values()):
            return False
        self.promise.resolve([o.as_dict() for o in self.outcomes.values() if o is not None])
        return True
