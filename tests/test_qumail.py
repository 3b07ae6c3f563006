"""QuMail's own calls, replayed exactly, against the served qumail_pair scenario over loopback.

Follows reference/qumail-client.md: the "QuMail-native variant" of the replay spec and the table
of every KM request, with QuMail's headers, then Level 1 (one-time pad + HMAC-SHA256) and Level 2
(AES-256-GCM keyed by HKDF over two 256-bit keys) exactly as its backend does, so a single byte of
key material differing between the nodes fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
N1 = "25840139-0dd4-49ae-ba1e-b86731601803"  # QuMail's SAE on KM1 (node 1)
N2 = "c565d5aa-8670-4446-8471-b0e53e315d2a"  # QuMail's SAE on KM2 (node 2)
API = "/api/v1/keys"


@pytest.fixture
def qumail_pair(tmp_path: Path):
    """The shipped scenario, served as a process, on two free ports instead of 8010/8020."""
    data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
    ports = [free_port(), free_port()]
    for lkm, port in zip(data["lkms"], ports):
        lkm["port"] = port
    scenario = tmp_path / "qumail_pair.yaml"
    scenario.write_text(yaml.safe_dump(data))
    process = subprocess.Popen(
        [sys.executable, "run_scenario.py", str(scenario), "--serve", "--out",
         str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=os.environ.copy())
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving"):
            break
    try:
        yield {"KM1": f"http://127.0.0.1:{ports[0]}", "KM2": f"http://127.0.0.1:{ports[1]}",
               "out": tmp_path / "out", "process": process}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)


class QuMailClient:
    """The requests QuMail's OptimizedKMClient makes, with its headers."""

    def __init__(self, session: aiohttp.ClientSession, urls: dict[str, Any]) -> None:
        self.session = session
        self.urls = urls

    async def call(self, node: str, own: str | None, method: str, path: str, peer: str | None = None,
                   body: dict | None = None) -> tuple[int, Any]:
        headers = {"User-Agent": "QuMail-SAE/1.0", "Content-Type": "application/json"}
        if own is not None:
            headers["X-SAE-ID"] = own
        if peer is not None:
            headers["X-Slave-SAE-ID"] = peer
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, self.urls[node] + path, headers=headers,
                                        data=data) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def enc_keys(self, number: int, size: int = 256) -> list[tuple[str, bytes]]:
        status, body = await self.call("KM1", N1, "POST", f"{API}/{N2}/enc_keys", N2,
                                       {"number": number, "size": size})
        assert status == 200, body
        return [(k["key_ID"], base64.b64decode(k["key"])) for k in body["keys"]]

    async def status_of(self, node: str, own: str, named: str, ids: list[str]) -> int:
        """The status of a dec_keys at ``node`` by ``own`` naming ``named`` in its path."""
        status, _ = await self.call(node, own, "POST", f"{API}/{named}/dec_keys", named,
                                    {"key_IDs": [{"key_ID": i} for i in ids]})
        return status

    async def dec_keys(self, ids: list[str]) -> tuple[int, dict[str, bytes]]:
        status, body = await self.call("KM2", N2, "POST", f"{API}/{N1}/dec_keys", N1,
                                       {"key_IDs": [{"key_ID": i} for i in ids]})
        if status != 200:
            return status, {}
        return status, {k["key_ID"]: base64.b64decode(k["key"]) for k in body["keys"]}


def mail(body_bytes: int) -> bytes:
    payload = {"subject": "hello", "body": "x" * body_bytes, "from": "alice@example.com",
               "to": "bob@example.com", "cc": [], "bcc": [], "timestamp": "2026-11-28T12:00:00Z"}
    return json.dumps(payload).encode()


def level1_encrypt(plain: bytes, keys: list[tuple[str, bytes]]) -> tuple[bytes, bytes, list[str]]:
    pad = b"".join(material for _, material in keys)
    length = len(plain)
    assert len(pad) >= length + 32
    cipher = bytes(p ^ k for p, k in zip(plain, pad[:length]))
    tag = hmac.new(pad[length:length + 32], cipher, hashlib.sha256).digest()
    return cipher, tag, [key_id for key_id, _ in keys]


def level1_decrypt(cipher: bytes, tag: bytes, order: list[str], keys: dict[str, bytes]) -> bytes:
    pad = b"".join(keys[key_id] for key_id in order)
    length = len(cipher)
    if len(pad) < length + 32:
        raise ValueError("fragments not found")
    expected = hmac.new(pad[length:length + 32], cipher, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise ValueError("HMAC verification failed")
    return bytes(c ^ k for c, k in zip(cipher, pad[:length]))


def level2_key(k1: bytes, k2: bytes, salt: bytes, flow_id: str) -> bytes:
    assert len(k1) == len(k2) == 32, "Level 2 needs keys of exactly 32 bytes"
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                info=f"QuMail-AES-{flow_id}".encode()).derive(k1 + k2)


async def test_qumail_runs_unmodified_against_the_served_pair(qumail_pair) -> None:
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)
        # (a) start-up probes, and the manager's other probes (any 4xx is fine for those)
        for node in ("KM1", "KM2"):
            status, body = await qm.call(node, N1 if node == "KM1" else N2, "GET",
                                         "/api/v1/kme/status")
            assert status == 200 and body["KME_ID"]
            # what QuMail reads there: with it, its start-up makes no /keys/1|3/status probes
            assert isinstance(body["stored_key_count"], int) and body["stored_key_count"] > 0
            assert body["key_size"] == 256
        for path in (f"{API}/1/status", f"{API}/3/status"):
            status, _ = await qm.call("KM1", N1, "GET", path)
            assert 400 <= status < 500
        status, _ = await qm.call("KM1", N1, "POST", f"{API}/capability_test/enc_keys", None,
                                  {"number": 256, "size": 1})
        assert 400 <= status < 500

        # (b)-(d) Level 1: a 1500-byte message, ceil((L+32)/32) keys of 256 bits in one request
        plain = mail(1500 - len(mail(0)))
        assert len(plain) == 1500
        number = math.ceil((len(plain) + 32) / 32)
        keys = await qm.enc_keys(number)
        assert len(keys) == number == 48 and all(len(m) == 32 for _, m in keys)
        cipher, tag, order = level1_encrypt(plain, keys)
        status, body = await qm.call("KM1", N1, "GET", f"{API}/{N2}/status")
        assert status == 200 and isinstance(body["stored_key_count"], int)
        assert body["max_key_per_request"] == 1100
        status, read = await qm.dec_keys(list(reversed(order)))  # QuMail maps by key_ID
        assert status == 200
        assert level1_decrypt(cipher, tag, order, read) == plain
        # (e) a second identical dec_keys fails with QuMail's own code for a key that is gone
        status, again = await qm.dec_keys(order)
        assert status == 404 and again == {}
        status, _ = await qm.call("KM2", N2, "POST", f"{API}/{N1}/dec_keys", N1,
                                  {"key_IDs": [{"key_ID": order[0]}]})
        assert status == 404
        # (f) mark_consumed at node 1 is tolerated
        status, _ = await qm.call("KM1", N1, "POST", f"{API}/mark_consumed", None,
                                  {"key_id": order[0], "consumed": True})
        assert status in (200, 404)

        # Level 2: AES-256-GCM from two 256-bit keys through HKDF
        (id1, k1), (id2, k2) = await qm.enc_keys(2)
        salt, nonce, flow_id = os.urandom(32), os.urandom(12), "flow-7"
        sealed = AESGCM(level2_key(k1, k2, salt, flow_id)).encrypt(nonce, plain, None)
        status, got = await qm.dec_keys([id1, id2])
        assert status == 200
        opened = AESGCM(level2_key(got[id1], got[id2], salt, flow_id)).decrypt(nonce, sealed, None)
        assert opened == plain

        # Every size QuMail asks for, 128 to 4096 bits, gives the same bytes at both nodes
        for size in (128, 512, 1024, 2048, 4096):
            [(key_id, material)] = await qm.enc_keys(1, size)
            assert len(material) == size // 8
            status, got = await qm.dec_keys([key_id])
            assert status == 200 and got == {key_id: material}, size
        # Level 3's quantum enhancement: 128 bits each way, the second from node 2 for node 1
        status, body = await qm.call("KM2", N2, "POST", f"{API}/{N1}/enc_keys", N1,
                                     {"number": 1, "size": 128})
        assert status == 200 and len(base64.b64decode(body["keys"][0]["key"])) == 16
        extra_keys = 5 + 1

        # GET dec_keys with repeated key_ID and with a comma list (QuMail's GET forms)
        fresh = [key_id for key_id, _ in await qm.enc_keys(4)]
        for query in (f"key_ID={fresh[0]}&key_ID={fresh[1]}", f"key_ID={fresh[2]},{fresh[3]}"):
            status, body = await qm.call("KM2", N2, "GET", f"{API}/{N1}/dec_keys?{query}", N1)
            assert status == 200 and len(body["keys"]) == 2

        # A 7 KB mail at Level 1 needs 221 keys: within the raised cap, one request each way
        big = mail(7040 - len(mail(0)))
        assert math.ceil((len(big) + 32) / 32) == 221
        keys = await qm.enc_keys(221)
        cipher, tag, order = level1_encrypt(big, keys)
        status, read = await qm.dec_keys(order)
        assert status == 200 and level1_decrypt(cipher, tag, order, read) == big

    process = qumail_pair["process"]
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    summary = json.loads((qumail_pair["out"] / "summary.json").read_text())
    assert summary["totals"]["keys_delivered"] == 48 + 2 + 4 + len(keys) + extra_keys
    assert summary["totals"]["keys_consumed"] == 48 + 2 + 4 + len(keys) + 5
    assert (qumail_pair["out"] / "plots" / "pool_levels.png").is_file()


async def test_a_32_kb_level_1_mail_fits_in_one_request_each_way(qumail_pair) -> None:
    """QuMail asks for ceil((L + 32) / 32) keys in one enc_keys and reads them all in one
    dec_keys; for a 32 KB mail that is 1,025 keys, under the pair's cap (which status shows)."""
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)
        status, body = await qm.call("KM1", N1, "GET", "/api/v1/kme/status")
        assert status == 200 and body["max_key_per_request"] >= 1025
        plain = b"q" * 32 * 1024
        keys = await qm.enc_keys(-(-(len(plain) + 32) // 32))
        assert len(keys) == 1025
        cipher, tag, order = level1_encrypt(plain, keys)
        status, read = await qm.dec_keys(order)
        assert status == 200 and level1_decrypt(cipher, tag, order, read) == plain


# -- QuMail's profile: its start-up, Level 3, mark_consumed, reopening, its local key cache ------

EVE = "SAE_EVE_001"  # a third party registered at node 2 (neither master nor slave of a key)


async def level3_keys(qm: QuMailClient) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """Level 3's quantum enhancement as QuMail's sender takes it: one 128-bit key at KM1 for
    node 2, and one at KM2 taken *by* node 2's SAE for node 1."""
    [(id_a, key_a)] = await qm.enc_keys(1, 128)
    status, body = await qm.call("KM2", N2, "POST", f"{API}/{N1}/enc_keys", N1,
                                 {"number": 1, "size": 128})
    assert status == 200, body
    [key_b] = body["keys"]
    return (id_a, key_a), (key_b["key_ID"], base64.b64decode(key_b["key"]))


async def test_start_up_probes_meet_no_404(qumail_pair) -> None:
    """QuMail's start-up and health calls (reference §7, requests 1, 2, 3 and 11): the node
    status carries stored_key_count, so no /keys/1|3/status fallback probe is made."""
    statuses = []
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)
        for node, own, peer in (("KM1", N1, N2), ("KM2", N2, N1)):
            for _ in range(1 + 4):  # the start-up wait, then get_status four times
                status, body = await qm.call(node, own, "GET", "/api/v1/kme/status")
                statuses.append(status)
                assert isinstance(body["stored_key_count"], int) and body["stored_key_count"] > 0
            status, body = await qm.call(node, own, "GET", f"{API}/{peer}/status")
            statuses.append(status)
            # the slice of the peer's pool was filled before the pair announced itself
            assert status == 200 and body["stored_key_count"] == 2000, body
        status, body = await qm.call("KM1", N1, "POST", f"{API}/capability_test/enc_keys", None,
                                     {"number": 256, "size": 1})
        statuses.append(status)
        assert status == 400 and body["message"]
    assert 404 not in statuses, statuses


async def test_level_3_decrypt_reads_both_keys_in_one_request_at_km2(qumail_pair) -> None:
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)
        (id_a, key_a), (id_b, key_b) = await level3_keys(qm)
        assert len(key_a) == len(key_b) == 16
        # the sender mixes the first 16 bytes of each into its AES key
        salt, nonce, plain = os.urandom(32), os.urandom(12), mail(700)
        aes = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"QuMail-L3")
        sealed = AESGCM(aes.derive(key_a + key_b)).encrypt(nonce, plain, None)
        # QuMail's exact decrypt request: KM2, path node 1's SAE, caller node 2, both IDs
        status, got = await qm.dec_keys([id_a, id_b])
        assert status == 200 and got == {id_a: key_a, id_b: key_b}
        aes = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"QuMail-L3")
        assert AESGCM(aes.derive(got[id_a] + got[id_b])).decrypt(nonce, sealed, None) == plain
        # each key is read once
        status, again = await qm.dec_keys([id_a, id_b])
        assert status == 404 and again == {}
        status, again = await qm.dec_keys([id_b])
        assert status == 404

        # a third party gets 401, and consumes nothing
        status, _ = await qm.call("KM2", None, "POST", f"{API}/register", None,
                                  {"sae_id": EVE, "user_email": "eve@example.com"})
        assert status == 201
        (id_a, key_a), (id_b, key_b) = await level3_keys(qm)
        status, body = await qm.call("KM2", EVE, "POST", f"{API}/{N1}/dec_keys", N1,
                                     {"key_IDs": [{"key_ID": id_a}, {"key_ID": id_b}]})
        assert status == 401 and body["message"]
        # some IDs unknown: 404, and the known ones are not consumed
        status, got = await qm.dec_keys([id_a, "qk_unknown_000001", id_b])
        assert status == 404 and got == {}
        assert await qm.dec_keys([id_a, id_b]) == (200, {id_a: key_a, id_b: key_b})
        # node 1 may not read its copy of key B (at its home, KM1) once node 2 has read it back
        assert await qm.status_of("KM1", N1, N2, [id_b]) == 404


async def test_mark_consumed_erases_an_unread_key_at_both_nodes(qumail_pair) -> None:
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)

        async def mark(node: str, own: str | None, key_id: str) -> tuple[int, Any]:
            return await qm.call(node, own, "POST", f"{API}/mark_consumed", None,
                                 {"key_id": key_id, "consumed": True})

        (id1, _), (id2, key2), (id3, _) = await qm.enc_keys(3)
        # before a read: the master marks it at KM1, and the receiver can no longer read it
        assert await mark("KM1", N1, id1) == (200, {
            "success": True, "message": "Key consumed", "key_id": id1, "key_ID": id1,
            "consumed": True})
        assert await qm.status_of("KM2", N2, N1, [id1]) == 404
        status, body = await mark("KM1", N1, id1)
        assert status == 404 and body["message"] == "Key not found or already consumed"
        # the slave may mark it at its own node too; a third party may not, and changes nothing
        status, _ = await qm.call("KM2", None, "POST", f"{API}/register", None,
                                  {"sae_id": EVE, "user_email": "eve@example.com"})
        assert status == 201
        status, body = await mark("KM2", EVE, id2)
        assert status == 401 and body["message"]
        assert await mark("KM2", N2, id3) == (200, {
            "success": True, "message": "Key consumed", "key_id": id3, "key_ID": id3,
            "consumed": True})
        assert await qm.dec_keys([id3]) == (404, {})
        # after a read: already consumed, at both nodes
        assert await qm.dec_keys([id2]) == (200, {id2: key2})
        assert (await mark("KM2", N2, id2))[0] == 404
        assert (await mark("KM1", N1, id2))[0] == 404
        status, body = await mark("KM1", N1, "qk_nobody_000001")
        assert status == 404 and body["message"] == "Key not found or already consumed"


async def test_reopening_a_mail_is_refused_with_quMails_404(qumail_pair) -> None:
    """Keys are read once: a reopened mail can only come from QuMail's local cache. Its KM2
    read and its Level 1 fallback to KM1 (its own SAE named as master, where the sender's
    copies were kept) both get 404, which QuMail reports as tampering or a server restart,
    never as an authentication failure (401)."""
    async with aiohttp.ClientSession() as session:
        qm = QuMailClient(session, qumail_pair)
        plain = mail(2000)
        keys = await qm.enc_keys(math.ceil((len(plain) + 32) / 32))
        cipher, tag, order = level1_encrypt(plain, keys)
        status, read = await qm.dec_keys(order)
        assert status == 200 and level1_decrypt(cipher, tag, order, read) == plain
        status, body = await qm.call("KM2", N2, "POST", f"{API}/{N1}/dec_keys", N1,
                                     {"key_IDs": [{"key_ID": i} for i in order]})
        assert status == 404 and body["message"]
        assert await qm.status_of("KM1", N1, N1, order) == 404


async def test_quMails_default_local_key_cache_takes_keys_ahead_in_batches(qumail_pair) -> None:
    """QuMail's local key cache: 10 single keys at start-up, then after every enc_keys a status
    call and up to 5 more; a mail spends cached keys first (one 32-byte fragment each) and
    fetches the rest in one request. A receiver with an empty cache reads them all at KM2."""
    async with aiohttp.ClientSession() as session:
        sender = QuMailClient(session, qumail_pair)
        cache: list[tuple[str, bytes]] = []
        for _ in range(10):
            cache += await sender.enc_keys(1, 256)
        status, body = await sender.call("KM1", N1, "GET", f"{API}/{N2}/status")
        assert status == 200 and body["stored_key_count"] > 0
        for _ in range(5):
            cache += await sender.enc_keys(1, 256)
        assert len({key_id for key_id, _ in cache}) == 15
        plain = mail(1200)
        needed = math.ceil((len(plain) + 32) / 32)
        keys = cache[:needed] + await sender.enc_keys(needed - len(cache))
        cipher, tag, order = level1_encrypt(plain, keys)
        receiver = QuMailClient(session, qumail_pair)
        status, read = await receiver.dec_keys(order)
        assert status == 200 and level1_decrypt(cipher, tag, order, read) == plain
