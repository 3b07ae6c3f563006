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

    async def call(self, node: str, own: str, method: str, path: str, peer: str | None = None,
                   body: dict | None = None) -> tuple[int, Any]:
        headers = {"User-Agent": "QuMail-SAE/1.0", "Content-Type": "application/json",
                   "X-SAE-ID": own}
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
        # (e) a second identical dec_keys fails; the mail already decrypted from the first
        status, again = await qm.dec_keys(order)
        assert status in (400, 404) and again == {}
        status, _ = await qm.call("KM2", N2, "POST", f"{API}/{N1}/dec_keys", N1,
                                  {"key_IDs": [{"key_ID": order[0]}]})
        assert status in (400, 404)
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

        # A 4 KB mail at Level 1 needs 129 keys: within the raised cap, one request
        big = mail(4096)
        keys = await qm.enc_keys(math.ceil((len(big) + 32) / 32))
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
