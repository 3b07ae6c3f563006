"""Keys held at two LKMs, consumed together.

A key a sender takes from a slice is also held at the receiver's home LKM (shipped there, for the
receiver to read once). Under strict ETSI the sender's copy is erased as it is handed out, so
only the home copy is ever read. QuMail's ``mark_consumed``, and its profile (where a master may
read its own key back once, for Level 3), consume a key at one LKM that still has a copy at the
other: the LKM then tells the other one, over the KM network, to erase its copy
(:class:`~nodes.keynode.messages.ConsumeCopies`). The notice goes from a task of its own, never
from the mailbox (an LKM does not await another actor there), and the HTTP reply waits for it;
one that cannot get through is recorded as an event, ``copies`` with outcome ``unreachable``,
and that copy stays readable once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nodes.keynode.errors import KMUnreachable
from nodes.keynode.messages import ConsumeCopies, MarkConsumed
from nodes.keynode.store import Key, delivery

log = logging.getLogger("qkdsim.lkm")


class Handed(list[Key]):
    """Keys handed out, and the notices erasing their copies elsewhere: an HTTP reply waits
    for those (not the LKM's mailbox), so once a client has its answer no copy is readable."""

    def __init__(self, keys: list[Key], notices: list[asyncio.Task[None]]) -> None:
        super().__init__(keys)
        self.notices = notices


async def mark_consumed(lkm: Any, msg: MarkConsumed) -> dict[str, Any] | None:
    """200 body of QuMail's mark_consumed, once the other node's copy is erased too; its
    refusals are raised (404, 401)."""
    read = await lkm.store.run(delivery.mark_consumed(msg.caller, msg.key_id, lkm.now()))
    lkm.observe("marked_consumed", lkm.name, caller=msg.caller)
    body = {"success": True, "message": "Key consumed", "key_id": msg.key_id,
            "key_ID": msg.key_id, "consumed": True}
    notices = send(lkm, read.copies)
    promise = lkm.defer_reply() if notices else None
    if promise is None:
        return body

    async def answer() -> None:
        await asyncio.gather(*notices, return_exceptions=True)
        promise.resolve(body)
    lkm.start_task(answer())
    return None


async def consume_here(lkm: Any, msg: ConsumeCopies) -> int:
    return int(await lkm.store.run(delivery.consume_copies(msg.key_ids, lkm.now())))


def send(lkm: Any, copies: dict[str, tuple[str, ...]]) -> list[asyncio.Task[None]]:
    """Tell each LKM holding a copy of these keys to erase it; the notices under way."""
    return [lkm.start_task(_notify(lkm, other, key_ids))
            for other, key_ids in copies.items() if other != lkm.name]


async def _notify(lkm: Any, other: str, key_ids: tuple[str, ...]) -> None:
    try:
        erased = await lkm.supply.consume_copies(lkm.name, other, key_ids)
    except KMUnreachable as error:
        log.info("%s: could not tell %s to erase %d key copies: %s", lkm.name, other,
                 len(key_ids), error.message)
        lkm.observe("copies", lkm.name, to=other, keys=len(key_ids), outcome="unreachable")
        return
    lkm.observe("copies", lkm.name, to=other, keys=len(key_ids), erased=erased, outcome="ok")
