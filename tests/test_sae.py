"""Simulated users against a real served LKM: a mail read that is cut off goes on from where it
stopped, and keys taken by a send that fails halfway are spent by the receiver, not abandoned.

Faults are injected around the real LKM by a transport that makes chosen calls fail as an
unreachable LKM does (status 0); every other call reaches the LKM over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from nodes.traffic.sae import UNREACHABLE, HttpTransport, MailAudit, Reply, SendMail, SimulatedSAE
from simulator import Stream, WallClock
from tests.support import Node, store_audit

ALICE, BOB = "SAE_ALICE_001", "SAE_BOB_001"
KEY_BITS = 8192


class Flaky:
    """The real HTTP transport, except that the calls numbered in ``drop`` fail unreachable."""

    def __init__(self, inner: HttpTransport, drop: set[int]) -> None:
        self.inner, self.drop, self.calls = inner, drop, []

    async def enc_keys(self, caller: str, slave: str, number: int, size_bits: int) -> Reply:
        return await self._call("enc", self.inner.enc_keys(caller, slave, number, size_bits))

    async def dec_keys(self, caller: str, master: str, key_ids: tuple[str, ...]) -> Reply:
        return await self._call("dec", self.inner.dec_keys(caller, master, key_ids))

    async def _call(self, kind: str, call: Any) -> Reply:
        self.calls.append(kind)
        if len(self.calls) in self.drop:
            call.close()
            return 0, {"message": UNREACHABLE}
        return await call


async def users(node: Node, session: aiohttp.ClientSession, drop_for_bob: set[int]
                ) -> tuple[SimulatedSAE, SimulatedSAE, MailAudit, list[tuple]]:
    """Alice and Bob as simulated SAEs of ``node`` (two keys per request at most), on a clock
    that runs 6000 times faster than real time so Bob's ten-minute retry comes in 0.1 s."""
    clock, audit, events, peers = WallClock(time_scale=6000.0), MailAudit(), [], {}

    def record(kind: str, node_name: str, **data: Any) -> None:
        events.append((kind, node_name, data))

    made = []
    for sae, drop in ((ALICE, set()), (BOB, drop_for_bob)):
        transport = Flaky(HttpTransport(session, node.url), drop)
        actor = SimulatedSAE(sae, transport, clock, lambda name: Stream.named(0, name), record,
                             audit, KEY_BITS, 2, peers)
        peers[sae] = await node.system.spawn(actor)
        made.append(actor)
    return made[0], made[1], audit, events


async def settled(node: Node) -> None:
    await asyncio.wait_for(node.system.activity.wait_idle(), 10)


async def test_a_read_cut_off_halfway_goes_on_from_the_keys_not_read_yet(tmp_path) -> None:
    node = await Node(tmp_path, max_keys_per_request=2).start()
    try:
        for sae in (ALICE, BOB):
            await node.register(sae, pool=50)
        async with aiohttp.ClientSession() as session:
            alice, bob, audit, events = await users(node, session, drop_for_bob={2})
            alice.ref.tell(SendMail(BOB, 5 * 1024))  # five keys: three requests each way
            await settled(node)
            await asyncio.sleep(0.3)  # Bob's retry, ten simulated minutes later
            await settled(node)
        assert bob.transport.calls == ["dec", "dec", "dec", "dec"]  # 1 ok, 2 cut, then 2, 3
        assert (audit.mails_sent, audit.mails_received, audit.mismatched_keys) == (1, 1, 0)
        assert [e for e in events if e[0] == "receive_failure"] == []
        counts = await store_audit(node.lkm.store)
        assert counts["status_2"] == 5 and counts.get("status_1", 0) == 0
    finally:
        await node.close()


async def test_keys_taken_by_a_send_that_fails_halfway_are_read_and_spent(tmp_path) -> None:
    node = await Node(tmp_path, max_keys_per_request=2, min_pool_size=1).start()
    try:
        await node.register(ALICE, pool=50)
        await node.register(BOB, pool=3)
        async with aiohttp.ClientSession() as session:
            alice, bob, audit, events = await users(node, session, drop_for_bob=set())
            alice.ref.tell(SendMail(BOB, 5 * 1024))  # 2 keys, then 2 more of the 1 left: 503
            await settled(node)
        assert [(kind, data["reason"]) for kind, _, data in events] == [("failure", "no_keys")]
        assert (audit.mails_sent, audit.released_keys, audit.mismatched_keys) == (0, 2, 0)
        counts = await store_audit(node.lkm.store)
        assert counts["status_2"] == 2 and counts.get("status_1", 0) == 0  # none abandoned
        assert counts["status_0"] == 50 + 1  # Alice's pool, and the key left in Bob's
    finally:
        await node.close()
