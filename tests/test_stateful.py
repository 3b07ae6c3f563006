"""A hypothesis state machine drives a served LKM over HTTP (register, enc_keys, dec_keys by the
right and wrong callers, refill, delete, manual sync, close and reopen on the same SQLite file)
and checks it against a model after every step:

- no key ID and no key material is ever delivered twice, to masters or to slaves;
- a refused call (any non-2xx) changes nothing in the database;
- the counts in ``key_pools`` (and so in status) equal the rows (``KeyStore.audit``), and the
  available bits equal the model's;
- the bytes a slave reads equal the bytes its master got.

Automatic syncs are off (threshold and emergency 0, interval a year), so every change to a pool
comes from a rule and the model can predict it; syncs are exercised by the manual-sync rule.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yarl
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nodes.keynode.config import SyncPolicy
from nodes.keynode.store.audit import COUNTS_FROM_ROWS
from tests.support import API, Node

SAES = ("SAE_A", "SAE_B", "SAE_C", "x'); DROP TABLE users;--")
POOL_BITS = 8192
SIZES = (None, 8192, 1024, 256, 64)
CONFIG = {"sync": SyncPolicy(interval_s=365 * 86400.0, threshold=0.0, emergency=0.0),
          "min_pool_size": 4, "max_pool_size": 16, "default_pool_size": 8,
          "max_keys_per_request": 6}


STATS: Counter[str] = Counter()  # calls by route and status over the whole run (-s prints it)


class Pending:
    """A key delivered to its master and not yet read by its slave (the pool owner)."""

    def __init__(self, slave: str, master: str, material: bytes) -> None:
        self.slave, self.master, self.material = slave, master, material


class KeyNodeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qkdsim-stateful-"))
        self.loop = asyncio.new_event_loop()
        self.node = self.run(Node(self.tmp, **CONFIG).start())
        self.limits: dict[str, int] = {}
        self.bits: dict[str, int] = {}
        self.pending: dict[str, Pending] = {}
        self.consumed: set[str] = set()
        self.consumed_by: dict[str, str] = {}
        self.ids_delivered: set[str] = set()
        self.materials_delivered: set[bytes] = set()
        self.calls = 0

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        STATS["runs"] += 1
        self.run(self.node.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- talking to the node and looking at its file ----------------------------------------

    def call(self, sae: str | None, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One request; a refused one must leave the database exactly as it was."""
        before = self.snapshot()
        url = yarl.URL(self.node.url + path, encoded=True)
        status, body = self.run(self.node.call(sae, method, url, **kwargs))
        self.calls += 1
        STATS[f"{method} {path.rsplit('/', 1)[-1]} {status}"] += 1
        event(f"{method} {path.rsplit('/', 1)[-1]} -> {status}")
        if status >= 300:
            assert self.snapshot() == before, (method, path, status, body)
        return status, body

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.tmp / "lkm.db", isolation_level=None)

    def snapshot(self) -> tuple:
        with self.db() as connection:
            return tuple(connection.execute(query).fetchall() for query in (
                "SELECT sae_id, user_email, is_active FROM users ORDER BY sae_id",
                "SELECT * FROM key_pools ORDER BY sae_id",
                "SELECT * FROM key_sequences ORDER BY sae_id",
                "SELECT id, key_id, sae_id, seq, status, size_bits, delivered_to_sae_id,"
                " slave_sae_id, hex(key_data) FROM quantum_keys ORDER BY id",
                "SELECT COUNT(*) FROM sync_logs"))

    def rows(self, sae: str) -> list[int]:
        with self.db() as connection:
            return [r[0] for r in connection.execute(
                "SELECT size_bits FROM quantum_keys WHERE sae_id = ? AND status = 0", (sae,))]

    def available_keys(self, sae: str) -> int:
        with self.db() as connection:
            return connection.execute("SELECT available_keys FROM key_pools WHERE sae_id = ?",
                                      (sae,)).fetchone()[0]

    def enough(self, sae: str, number: int, size: int) -> bool:
        rows = self.rows(sae)
        if size == POOL_BITS:
            return sum(1 for bits in rows if bits == POOL_BITS) >= number
        return sum(bits // size for bits in rows) >= number

    # -- rules ---------------------------------------------------------------------------------

    @initialize(pools=st.lists(st.integers(4, 8), min_size=2, max_size=2))
    def two_users(self, pools: list[int]) -> None:
        """Start with two users, so most runs get to deliveries and reads early."""
        for sae, pool in zip(SAES, pools, strict=False):
            self.register(sae, pool)

    @rule(sae=st.sampled_from(SAES), pool=st.integers(0, 20))
    def register(self, sae: str, pool: int) -> None:
        status, body = self.call(None, "POST", f"{API}/register", json={
            "sae_id": sae, "user_email": f"{hashlib.sha1(sae.encode()).hexdigest()}@example.com",
            "initial_pool_size": pool})
        if sae in self.limits:
            assert status == 400, body
            return
        limit = min(max(pool or CONFIG["default_pool_size"], CONFIG["min_pool_size"]),
                    CONFIG["max_pool_size"])
        assert status == 201 and body["pool_size"] == body["keys_generated"] == limit, body
        self.limits[sae], self.bits[sae] = limit, limit * POOL_BITS

    def some_sae(self, data: st.DataObject) -> str:
        """Mostly a registered SAE (so calls get past the identity checks), sometimes any."""
        registered = sorted(self.limits)
        if registered and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(registered))
        return data.draw(st.sampled_from(SAES))

    ENC = {"data": st.data(), "number": st.integers(1, 4), "size": st.sampled_from(SIZES),
           "get": st.booleans()}

    @rule(**ENC)
    def enc_keys(self, data: st.DataObject, number: int, size: int | None, get: bool) -> None:
        master, slave = self.some_sae(data), self.some_sae(data)
        path = f"{API}/{quote(slave, safe='')}/enc_keys"
        query = {"number": str(number), **({"size": str(size)} if size else {})}
        bits = size or POOL_BITS
        enough = slave in self.limits and self.enough(slave, number, bits)
        if get:
            status, body = self.call(master, "GET", path, params=query)
        else:
            status, body = self.call(master, "POST", path,
                                     json={k: int(v) for k, v in query.items()})
        if master not in self.limits:
            assert status == 401, body
        elif slave not in self.limits:
            assert status == 404, body
        elif slave == master:
            assert status == 400, body
        elif not enough:
            assert status == 503, body
        else:
            assert status == 200, body
            self.delivered(body["keys"], slave, master, number, bits)

    def delivered(self, keys: list[dict], slave: str, master: str, number: int, bits: int) -> None:
        assert len(keys) == number
        for key in keys:
            material = base64.b64decode(key["key"], validate=True)
            assert len(material) * 8 == bits
            assert key["key_ID"] not in self.ids_delivered, key["key_ID"]
            assert material not in self.materials_delivered
            self.ids_delivered.add(key["key_ID"])
            self.materials_delivered.add(material)
            self.pending[key["key_ID"]] = Pending(slave, master, material)
        self.bits[slave] -= number * bits

    @rule(**ENC)
    def enc_keys_more(self, **values: Any) -> None:
        """The key flow is what matters: two more entries in the rule table weight it up."""
        self.enc_keys(**values)

    @rule(**ENC)
    def enc_keys_again(self, **values: Any) -> None:
        self.enc_keys(**values)

    DEC = {"data": st.data(),
           "caller_kind": st.sampled_from(["slave", "slave", "slave", "other", "wrong_master"]),
           "extra": st.sampled_from([None, None, "consumed", "unknown"]), "get": st.booleans()}

    @precondition(lambda self: self.pending)
    @rule(**DEC)
    def dec_keys(self, data: st.DataObject, caller_kind: str, extra: str | None,
                 get: bool) -> None:
        first = data.draw(st.sampled_from(sorted(self.pending)))
        entry = self.pending[first]
        same = sorted(k for k, p in self.pending.items()
                      if p.slave == entry.slave and p.master == entry.master)
        ids = data.draw(st.lists(st.sampled_from(same), min_size=1, max_size=3, unique=True))
        if extra == "consumed" and self.consumed:
            ids.append(data.draw(st.sampled_from(sorted(self.consumed))))
        elif extra == "unknown":
            ids.append("qk_nobody_999999")
        caller, master = entry.slave, entry.master
        if caller_kind == "other":
            caller = data.draw(st.sampled_from([s for s in SAES if s != entry.slave]))
        elif caller_kind == "wrong_master":
            master = data.draw(st.sampled_from([s for s in SAES if s != entry.master]))
        path = f"{API}/{quote(master, safe='')}/dec_keys"
        if get and len(ids) == 1:
            status, body = self.call(caller, "GET", path, params={"key_ID": ids[0]})
        else:
            status, body = self.call(caller, "POST", path,
                                     json={"key_IDs": [{"key_ID": i} for i in ids]})
        self.check_read(ids, caller, master, status, body)

    def check_read(self, ids: list[str], caller: str, master: str, status: int, body: Any) -> None:
        slaves = {self.pending[i].slave for i in ids if i in self.pending}
        slaves |= {self.consumed_by[i] for i in ids if i in self.consumed}
        if caller not in self.limits or slaves - {caller}:
            assert status == 401, body
        elif any(i not in self.pending or self.pending[i].master != master for i in ids):
            assert status == 400, body
        else:
            assert status == 200, body
            got = {k["key_ID"]: base64.b64decode(k["key"]) for k in body["keys"]}
            assert got == {i: self.pending[i].material for i in ids}  # receiver = sender bytes
            for key_id in ids:
                self.consumed.add(key_id)
                self.consumed_by[key_id] = caller
                del self.pending[key_id]

    @precondition(lambda self: self.pending)
    @rule(**DEC)
    def dec_keys_more(self, **values: Any) -> None:
        self.dec_keys(**values)

    @precondition(lambda self: self.pending)
    @rule(**DEC)
    def dec_keys_again(self, **values: Any) -> None:
        self.dec_keys(**values)

    @rule(sae=st.sampled_from(SAES), keys=st.integers(0, 10))
    def refill(self, sae: str, keys: int) -> None:
        before = self.available_keys(sae) if sae in self.limits else None
        status, body = self.call(None, "POST", f"{API}/{quote(sae, safe='')}/refill",
                                 json={"keys_to_add": keys})
        if before is None:
            assert status == 404, body
            return
        assert status == 200 and body["keys_added"] == min(keys, max(self.limits[sae] - before, 0))
        self.bits[sae] += body["keys_added"] * POOL_BITS

    @rule(sae=st.sampled_from(SAES))
    def delete(self, sae: str) -> None:
        status, body = self.call(None, "DELETE", f"{API}/{quote(sae, safe='')}")
        assert status == 200, body
        if sae in self.limits:
            del self.limits[sae], self.bits[sae]
            for key_id in [k for k, p in self.pending.items() if p.slave == sae]:
                del self.pending[key_id]  # gone with its pool; never readable again
            for key_id in [k for k, s in self.consumed_by.items() if s == sae]:
                self.consumed.discard(key_id)
                del self.consumed_by[key_id]

    @rule(users=st.lists(st.sampled_from(SAES), max_size=2, unique=True))
    def sync(self, users: list[str]) -> None:
        targets = users or [s for s in self.limits if self.available_keys(s) < self.limits[s]]
        room = {s: self.limits[s] - self.available_keys(s) for s in targets if s in self.limits}
        status, body = self.call(None, "POST", f"{API}/km/sync", json={"users": users})
        if any(s not in self.limits for s in users):
            assert status == 404, body
            return
        assert status == 200 and body["success"], body
        assert body["keys_received"] == sum(max(r, 0) for r in room.values()), (body, room)
        for sae, added in room.items():
            self.bits[sae] += max(added, 0) * POOL_BITS

    @rule()
    def close_and_reopen(self) -> None:
        self.run(self.node.close())
        self.node = self.run(Node(self.tmp, **CONFIG).start())
        STATS["reopen"] += 1
        event("close and reopen")

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def counts_equal_rows_and_the_model(self) -> None:
        with self.db() as connection:
            for row in connection.execute(COUNTS_FROM_ROWS):
                assert tuple(row[1:4]) == tuple(row[4:7]), row
            pools = {r[0]: r[1] for r in connection.execute(
                "SELECT sae_id, available_bits FROM key_pools")}
            assert pools == self.bits
            states = dict(connection.execute("SELECT key_id, status FROM quantum_keys"
                                             " WHERE status > 0").fetchall())
            erased = connection.execute("SELECT COUNT(*) FROM quantum_keys"
                                        " WHERE status = 2 AND key_data IS NOT NULL").fetchone()
        assert all(states.get(k) == 1 for k in self.pending)
        assert all(states.get(k) == 2 for k in self.consumed)
        assert erased == (0,)


# Shrinking replays whole runs against a fresh node and can take Hypothesis's five minutes;
# it is off unless QKDSIM_SHRINK=1 (a failure still prints the steps that led to it).
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + (
    [Phase.shrink] if os.environ.get("QKDSIM_SHRINK") == "1" else [])
TestKeyNode = KeyNodeMachine.TestCase
TestKeyNode.settings = settings(max_examples=50, stateful_step_count=50, deadline=None,
                                phases=PHASES, report_multiple_bugs=False,
                                suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.filter_too_much])


def test_the_state_machine_ran_deliveries_reads_refusals_and_reopens() -> None:
    """Runs after TestKeyNode (file order): the run reached every kind of outcome."""
    if not STATS["runs"]:
        import pytest
        pytest.skip("TestKeyNode did not run in this session")
    calls = sum(v for k, v in STATS.items() if k not in ("runs", "reopen"))
    print(f"stateful: {STATS['runs']} runs, {STATS['reopen']} reopens, {calls} HTTP calls: "
          f"{dict(sorted(STATS.items()))}")
    assert STATS["reopen"] > 0
    for outcome in ("enc_keys 200", "dec_keys 200", "dec_keys 400", "enc_keys 401"):
        assert sum(v for k, v in STATS.items() if k.endswith(outcome)) > 0, outcome
