"""The "Client replay script spec" of reference/qumail-client.md, steps 1-25, as one test.

Behaves like QuMail's client on the two-tier per-user pools (HTTP, X-SAE-ID identity, QuMail's
headers), encrypting a ~1500-byte mail with Level 1 OTP + HMAC and decrypting it from dec_keys.
Two places differ from the spec's text, both on purpose (docs/architecture.md):
step 4 asserts min_key_size <= 256 (the node serves QuMail's 256-bit keys, which step 19 needs,
so min_key_size cannot be 8192), and the counts after step 13 follow from the steps themselves
(the spec's "46" forgets the two keys step 13 takes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re

from tests.support import API, Node, decoded

A, B, EVE = "SAE_ALICE_001", "SAE_BOB_001", "SAE_EVE_001"
NOT_FOUND = "one or more keys specified are not found on KME"


def qumail_headers(caller: str, peer: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "QuMail-SAE/1.0",
               "X-SAE-ID": caller}
    if peer is not None:
        headers["X-Slave-SAE-ID"] = peer
    return headers


def mail_plaintext() -> bytes:
    mail = {"subject": "quarterly figures", "body": "", "from": "alice@example.com",
            "to": "bob@example.com", "cc": [], "bcc": [], "timestamp": "2026-11-28T12:00:00Z"}
    base = len(json.dumps(mail).encode())
    mail["body"] = "x" * (1500 - base)
    return json.dumps(mail).encode()


def otp_encrypt(plain: bytes, pad: bytes) -> tuple[bytes, bytes]:
    length = len(plain)
    cipher = bytes(p ^ k for p, k in zip(plain, pad[:length]))
    return cipher, hmac.new(pad[length:length + 32], cipher, hashlib.sha256).digest()


def otp_decrypt(cipher: bytes, tag: bytes, pad: bytes) -> bytes:
    length = len(cipher)
    expected = hmac.new(pad[length:length + 32], cipher, hashlib.sha256).digest()
    assert hmac.compare_digest(expected, tag), "HMAC check failed: key material differs"
    return bytes(c ^ k for c, k in zip(cipher, pad[:length]))


async def call(node: Node, caller: str | None, method: str, path: str, peer: str | None = None,
               **kwargs) -> tuple[int, dict]:
    headers = qumail_headers(caller, peer) if caller else {"Content-Type": "application/json"}
    async with node.session(None).request(method, path, headers=headers, **kwargs) as response:
        return response.status, json.loads(await response.text())


async def available(node: Node, sae: str) -> int:
    status, body = await call(node, A if sae != A else B, "GET", f"{API}/{sae}/status")
    assert status == 200, body
    return body["available_keys"]


async def test_the_client_replay_script_spec_runs_end_to_end(node: Node) -> None:
    # Setup (1-4)
    status, body = await call(node, None, "GET", "/health")
    assert (status, body["status"]) == (200, "healthy")
    for sae, email in ((A, "alice@example.com"), (B, "bob@example.com")):
        status, body = await call(node, None, "POST", f"{API}/register", json={
            "sae_id": sae, "user_email": email, "initial_pool_size": 50})
        assert status == 201, body
        assert body["success"] is True and body["keys_generated"] == 50
        assert body["pool_size"] == 50 and body["sae_id"] == sae and body["registered_at"]
    status, body = await call(node, None, "POST", f"{API}/register", json={
        "sae_id": A, "user_email": "alice@example.com", "initial_pool_size": 50})
    assert status == 400 and body["success"] is False
    assert "already registered" in body["error"]
    status, body = await call(node, A, "GET", f"{API}/{B}/status")
    assert status == 200
    assert body["available_keys"] == body["stored_key_count"] == body["total_keys"] == 50
    assert body["key_size"] == body["max_key_size"] == 8192
    assert body["min_key_size"] <= 256 and body["max_key_per_request"] >= 1

    # Send, Alice -> Bob, Level 1 OTP (5-9)
    plain = mail_plaintext()
    length = len(plain)
    number = math.ceil((length + 32) / 1024)
    assert (length, number) == (1500, 2)
    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B,
                              json={"number": 2, "size": 8192})
    assert status == 200, body
    ids = [k["key_ID"] for k in body["keys"]]
    assert len(ids) == 2 == len(set(ids))
    assert all(re.fullmatch(rf"qk_{B}_\d{{6}}", key_id) for key_id in ids)
    sent = decoded(body["keys"])
    assert all(len(material) == 1024 for material in sent.values())
    pad = b"".join(sent[key_id] for key_id in ids)[:length + 32]
    cipher, tag = otp_encrypt(plain, pad)
    assert await available(node, B) == 48
    status, body = await call(node, A, "GET", f"{API}/{B}/status")
    assert body["used_keys"] == 2
    assert await available(node, A) == 50
    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B,
                              json={"number": 2, "size": 8192})
    assert status == 200
    later_ids = [k["key_ID"] for k in body["keys"]]
    later = decoded(body["keys"])
    assert not set(later_ids) & set(ids)

    # Receive, Bob with an empty cache (10-12)
    key_ids = {"key_IDs": [{"key_ID": key_id} for key_id in ids]}
    status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A, json=key_ids)
    assert status == 200, body
    received = decoded(body["keys"])
    assert received == sent
    assert otp_decrypt(cipher, tag, b"".join(received[i] for i in ids)[:length + 32]) == plain
    status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A, json=key_ids)
    assert (status, body["message"]) == (400, NOT_FOUND)
    status, body = await call(node, B, "GET",
                              f"{API}/{A}/dec_keys?key_ID={later_ids[0]}&key_ID={later_ids[1]}", A)
    assert status == 200 and decoded(body["keys"]) == later
    status, body = await call(node, A, "POST", f"{API}/mark_consumed",
                              json={"key_id": ids[0], "consumed": True})
    assert status in (200, 404)

    # Negative checks (13-20)
    status, body = await call(node, None, "POST", f"{API}/register", json={
        "sae_id": EVE, "user_email": "eve@example.com", "initial_pool_size": 50})
    assert status == 201
    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B, json={"number": 2})
    fresh = decoded(body["keys"])
    fresh_ids = {"key_IDs": [{"key_ID": key_id} for key_id in fresh]}
    status, body = await call(node, EVE, "POST", f"{API}/{A}/dec_keys", A, json=fresh_ids)
    assert status == 401 and isinstance(body["message"], str)
    status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A, json=fresh_ids)
    assert status == 200 and decoded(body["keys"]) == fresh

    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B, json={"number": 1})
    valid_id = body["keys"][0]["key_ID"]
    for id_list in (["qk_nobody_000001"], ["qk_nobody_000001", valid_id]):
        status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A,
                                  json={"key_IDs": [{"key_ID": i} for i in id_list]})
        assert (status, body["message"]) == (400, NOT_FOUND)
    status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A,
                              json={"key_IDs": [{"key_ID": valid_id}]})
    assert status == 200 and [k["key_ID"] for k in body["keys"]] == [valid_id]
    status, body = await call(node, B, "POST", f"{API}/{A}/dec_keys", A, json={"key_IDs": []})
    assert status == 400

    status, body = await call(node, A, "POST", f"{API}/SAE_NOBODY/enc_keys", "SAE_NOBODY",
                              json={"number": 1})
    assert status in (400, 404) and body["message"]
    left = await available(node, B)
    assert left == 50 - 2 - 2 - 2 - 1
    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B, json={"number": left + 1})
    assert status == 503 and body["message"]
    assert await available(node, B) == left
    status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B, json={"number": 101})
    assert status == 400
    status, body = await call(node, A, "POST", f"{API}/{EVE}/enc_keys", EVE,
                              json={"number": 1, "size": 256})
    assert status == 200 and len(decoded(body["keys"]).popitem()[1]) == 32
    status, body = await call(node, A, "GET", f"{API}/{EVE}/status")
    assert body["available_bits"] == 50 * 8192 - 256
    for bad in (0, -1, 1.5, "3"):
        status, body = await call(node, A, "POST", f"{API}/{B}/enc_keys", B, json={"number": bad})
        assert status == 400, bad
    assert await available(node, B) == left

    # Housekeeping (21-25)
    status, body = await call(node, None, "POST", f"{API}/{A}/refill", json={"keys_to_add": 10})
    assert status == 200 and body["success"] is True and body["keys_added"] == 0
    status, body = await call(node, None, "POST", f"{API}/{B}/refill", json={})
    assert status == 200 and body["keys_added"] == 50 - left and body["available_after"] == 50
    status, body = await call(node, None, "GET", f"{API}/pools")
    assert {A, B} <= {p["sae_id"] for p in body["pools"]}
    assert body["summary"]["total_users"] >= 2
    status, body = await call(node, None, "GET", f"{API}/km/status")
    assert status == 200 and {"local_km_id", "sync_stats", "pools"} <= set(body)
    status, body = await call(node, None, "POST", f"{API}/km/sync", json={"users": [B]})
    assert status == 200 and "success" in body and "users_synced" in body
    for sae in (A, B):
        status, body = await call(node, None, "DELETE", f"{API}/{sae}")
        assert status == 200 and body["success"] is True and body["keys_deleted"] > 0
    status, body = await call(node, A, "GET", f"{API}/{A}/status")
    assert status == 404
