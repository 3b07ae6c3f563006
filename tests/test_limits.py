"""Limits of a served node: slow and half-open connections are cut within a bound while others
are served; out-of-bound numbers are 400; SAE IDs that look like SQL, paths, markup or URL
escapes are data, never code or paths."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from prometheus_client.parser import text_string_to_metric_families

from nodes.keynode.config import NodeConfig, TlsFiles
from nodes.keynode.supply import LocalKeySupply
from nodes.server.pki import client_ssl_context, write_pki
from nodes.server.serve import ServedNode, ServerTimeouts
from simulator import ActorSystem
from simulator.clock import WallClock
from tests.support import API, Node, decoded

ALICE = "SAE_ALICE_001"
FAST = ServerTimeouts(idle_s=0.5, body_s=0.5, linger_s=0.2)
BOUND_S = 3.0  # a cut connection must be gone by then (timer + scheduling slack)
ODD_IDS = (
    "x'); DROP TABLE users;--",
    "Robert\"; DELETE FROM quantum_keys; --",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fshadow",
    "a/b/../c",
    "%",
    "_",
    "a?b#c&d=e",
    "<script>alert(1)</script>",
    "sae x",
    "C:\\Windows\\system32",
    "S" * 128,
)
STRICT_TABLES = {"users", "key_pools", "key_sequences", "quantum_keys", "sync_logs"}


class Served:
    """A ServedNode with short connection timeouts (support.Node uses the defaults)."""

    def __init__(self, tmp: Path, timeouts: ServerTimeouts = FAST, tls: bool = False) -> None:
        values: dict = {"port": 0, "db_path": str(tmp / "lkm.db")}
        self.pki = None
        if tls:
            self.pki = write_pki(tmp / "pki", ["kme"], [ALICE])
            cert, key = self.pki.nodes["kme"]
            values.update(use_https=True, tls=TlsFiles(self.pki.ca_cert, cert, key))
        self.system = ActorSystem()
        self.node = ServedNode(NodeConfig(**values), self.system, WallClock(),
                               LocalKeySupply(os.urandom), timeouts=timeouts)

    async def __aenter__(self) -> "Served":
        await self.node.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.node.stop()
        await self.system.stop_all()

    def client(self) -> aiohttp.ClientSession:
        connector = None
        if self.pki is not None:
            cert, key = self.pki.saes[ALICE]
            connector = aiohttp.TCPConnector(ssl=client_ssl_context(self.pki.ca_cert, cert, key))
        return aiohttp.ClientSession(self.node.url, connector=connector)

    async def open(self, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ssl_context = None
        if tls:
            assert self.pki is not None
            cert, key = self.pki.saes[ALICE]
            ssl_context = client_ssl_context(self.pki.ca_cert, cert, key)
        return await asyncio.open_connection("127.0.0.1", self.node.port, ssl=ssl_context)


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout=BOUND_S + 5)
    return data, time.monotonic() - start


async def healthy(served: Served) -> bool:
    async with served.client() as client, client.get("/health") as response:
        return response.status == 200


# -- slow and half-open connections ---------------------------------------------------------------

async def test_half_a_request_head_is_cut_within_the_bound_and_others_are_served(tmp_path) -> None:
    async with Served(tmp_path) as served:
        silent = await served.open()
        half = await served.open()
        half[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-SAE-ID: SAE_A")
        await half[1].drain()
        assert await healthy(served)  # while both hang
        for reader, writer in (silent, half):
            data, took_s = await until_closed(reader)
            assert data == b"" and took_s < BOUND_S
            writer.close()
        assert await healthy(served)


async def test_a_slowloris_trickling_header_bytes_is_cut_at_the_bound(tmp_path) -> None:
    async with Served(tmp_path) as served:
        reader, writer = await served.open()
        start = time.monotonic()
        closed_after_s = None
        for byte in b"GET /health HTTP/1.1\r\nX-Padding: " + b"a" * 200:
            if reader.at_eof() or writer.is_closing():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            if await _eof_within(reader, 0.05):
                closed_after_s = time.monotonic() - start
                break
        assert closed_after_s is not None and closed_after_s < BOUND_S, closed_after_s
        assert await healthy(served)


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout=seconds) == b""
    except asyncio.TimeoutError:
        return False


async def test_half_a_body_is_answered_408_and_cut_while_others_are_served(tmp_path) -> None:
    async with Served(tmp_path) as served:
        reader, writer = await served.open()
        writer.write(b"POST /api/v1/keys/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sae_id\"")
        await writer.drain()
        assert await healthy(served)
        data, took_s = await until_closed(reader)
        assert data.startswith(b"HTTP/1.1 408"), data[:80]
        assert b'"message"' in data and took_s < BOUND_S
        writer.close()
        assert await healthy(served)


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_bound(tmp_path) -> None:
    async with Served(tmp_path) as served:
        reader, writer = await served.open()
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        data, took_s = await until_closed(reader)  # the reply, then the close when idle
        assert data.startswith(b"HTTP/1.1 200") and b"healthy" in data
        assert FAST.idle_s * 0.5 <= took_s < BOUND_S
        writer.close()


async def test_under_tls_a_stalled_handshake_or_half_request_does_not_block_others(
        tmp_path) -> None:
    async with Served(tmp_path, tls=True) as served:
        raw = await served.open()  # TCP only: no ClientHello (asyncio cuts it after 60 s)
        reader, writer = await served.open(tls=True)  # handshake done, then half a head
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        assert await healthy(served)
        data, took_s = await until_closed(reader)
        assert data == b"" and took_s < BOUND_S
        assert await healthy(served)
        for stream in (raw[1], writer):
            stream.close()


# -- numbers out of bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    {"number": "1000000000"}, {"number": "0"}, {"number": "-1"}, {"number": "101"},
    {"number": "1e3"}, {"number": "99999999999999999999"}, {"number": "0x10"},
    {"size": "2147483648"}, {"size": "0"}, {"size": "-8"}, {"size": "7"}, {"size": "16384"},
    {"size": "8192.0"},
])
async def test_numbers_out_of_bounds_are_400_and_take_no_key(node: Node, query) -> None:
    await node.register(ALICE)
    await node.register("SAE_BOB_001")
    status, body = await node.call(ALICE, "GET", f"{API}/SAE_BOB_001/enc_keys", params=query)
    assert status == 400 and body["message"], body
    as_json = {name: _number(value) for name, value in query.items()}
    status, body = await node.call(ALICE, "POST", f"{API}/SAE_BOB_001/enc_keys", json=as_json)
    assert status == 400 and body["message"], body
    status, body = await node.call(ALICE, "GET", f"{API}/SAE_BOB_001/status")
    assert body["stored_key_count"] == 50


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


# -- SAE IDs are data ------------------------------------------------------------------------------

def encoded(node: Node, path: str) -> yarl.URL:
    return yarl.URL(node.url + path, encoded=True)


def schema_of(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


async def test_odd_sae_ids_are_stored_and_served_as_data(node: Node, tmp_path: Path) -> None:
    db = tmp_path / "lkm.db"
    schema = schema_of(db)
    files = {p.name for p in tmp_path.rglob("*")}
    passwd = os.stat("/etc/passwd").st_mtime_ns if os.path.exists("/etc/passwd") else None
    await node.register(ALICE, pool=40)
    for index, sae in enumerate(ODD_IDS):
        await node.register(sae, email=f"odd{index}@example.com", pool=10)
    for sae in ODD_IDS:
        await _round_trip(node, sae)
    status, body = await node.call(ALICE, "GET", f"{API}/pools")
    assert sorted(p["sae_id"] for p in body["pools"]) == sorted((ALICE, *ODD_IDS))
    assert schema_of(db) == schema  # no table dropped, created or altered
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM users").fetchone()[0] == len(ODD_IDS) + 1
        assert {r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")} >= STRICT_TABLES
    assert {p.name for p in tmp_path.rglob("*")} - files <= {"lkm.db-journal"}
    assert passwd is None or os.stat("/etc/passwd").st_mtime_ns == passwd
    status, text = await node.call(None, "GET", "/metrics")
    labels = {s.labels["sae"] for f in text_string_to_metric_families(text)
              if f.name == "qkdsim_pool_available_keys" for s in f.samples}
    assert labels == {ALICE, *ODD_IDS}  # escaped in the exposition, parsed back verbatim


async def _round_trip(node: Node, sae: str) -> None:
    """ALICE takes a key from sae's pool, sae reads it; then the reverse; status both ways."""
    quoted = quote(sae, safe="")
    status, body = await node.call(ALICE, "GET", encoded(node, f"{API}/{quoted}/status"))
    assert status == 200 and body["slave_SAE_ID"] == sae, (sae, body)
    status, body = await node.call(ALICE, "POST", encoded(node, f"{API}/{quoted}/enc_keys"),
                                   json={"number": 1, "size": 256})
    assert status == 200, (sae, body)
    sent = decoded(body["keys"])
    status, body = await node.call(sae, "POST", encoded(node, f"{API}/{ALICE}/dec_keys"),
                                   json={"key_IDs": [{"key_ID": k} for k in sent]})
    assert status == 200 and decoded(body["keys"]) == sent, (sae, body)
    status, body = await node.call(sae, "POST", encoded(node, f"{API}/{ALICE}/enc_keys"))
    assert status == 200, (sae, body)
    [key] = body["keys"]
    status, body = await node.call(ALICE, "GET", encoded(node, f"{API}/{quoted}/dec_keys"),
                                   params={"key_ID": key["key_ID"]})
    assert status == 200 and body["keys"] == [key], (sae, body)
    assert len(base64.b64decode(key["key"])) == 1024


@pytest.mark.parametrize("sae", ["", " lead", "trail ", "a\u0000b", "tab\there", "line\nbreak",
                                 "S" * 129, "register", "pools", "km", "\u200bzero-width"])
async def test_unusable_sae_ids_are_refused_at_registration_and_stored_nowhere(
        node: Node, tmp_path: Path, sae: str) -> None:
    status, body = await node.call(None, "POST", f"{API}/register",
                                   json={"sae_id": sae, "user_email": "x@example.com"})
    assert status == 400 and body["success"] is False, body
    with sqlite3.connect(tmp_path / "lkm.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0


async def test_odd_sae_ids_as_certificate_names_under_tls(tls_node: Node) -> None:
    odd = ["x'); DROP TABLE users;--", "../../etc/passwd", "SAE_東京_Ω", "%_*"]
    assert tls_node.pki is not None
    extra = write_pki(tls_node.pki.ca_cert.parent, [], odd)  # same CA, file names made safe
    tls_node.pki.saes.update(extra.saes)
    assert all(p.parent == tls_node.pki.ca_cert.parent for pair in extra.saes.values()
               for p in pair)
    for index, sae in enumerate(odd):
        status, body = await tls_node.call(sae, "POST", f"{API}/register", json={
            "sae_id": sae, "user_email": f"tls{index}@example.com", "initial_pool_size": 10})
        assert status == 201, body
    for master, slave in zip(odd, odd[1:] + odd[:1], strict=True):
        status, body = await tls_node.call(
            master, "POST", encoded(tls_node, f"{API}/{quote(slave, safe='')}/enc_keys"))
        assert status == 200, (master, slave, body)
        status, read = await tls_node.call(
            slave, "POST", encoded(tls_node, f"{API}/{quote(master, safe='')}/dec_keys"),
            json={"key_IDs": [{"key_ID": body["keys"][0]["key_ID"]}]})
        assert status == 200 and read["keys"] == body["keys"], (master, slave, read)
