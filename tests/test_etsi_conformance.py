"""Black-box conformance of one LKM to ETSI GS QKD 014 (reference §10, the single-KME cases).

Every test talks to a real LKM over mutual TLS (``tls_node``: the caller is the CN of its client
certificate), except case 39 (URL-encoded SAE IDs), which registers IDs with a space and a slash
and uses the plain-HTTP ``node`` fixture whose ``X-SAE-ID`` header can carry them (plus one TLS
variant with certificates for those IDs).

Project decisions asserted here (deliberate deviations from the reference's REC/§10 wording):
key IDs are ``qk_{owner}_{seq:06d}``, not UUIDs (case 14 asserts format, uniqueness and never
repeated); an unknown slave SAE is 404 (case 9); the Status reply carries the seed's pool fields
next to the 11 ETSI fields (case 6); multicast is unsupported, so any additional slave is 400
(cases 24 and 37). Keys always come from the *receiver's* (slave's) pool.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import time
from typing import Any

import aiohttp
import pytest
import yarl

from nodes.server.pki import client_ssl_context, write_pki
from tests.conftest import SAES
from tests.support import API, OPERATOR, Node, decoded, stored_rows

ALICE, BOB, CAROL, EVE = SAES
NOT_FOUND = "one or more keys specified are not found on KME"
SIZE_NOT_MULTIPLE_OF_8 = "size shall be a multiple of 8"
EXT_UNSUPPORTED = "not all extension_mandatory parameters are supported"
KEY_ID = re.compile(r"^qk_(?P<owner>.+)_(?P<seq>\d{6,})$")
ETSI_STATUS_FIELDS = {
    "source_KME_ID": str, "target_KME_ID": str, "master_SAE_ID": str, "slave_SAE_ID": str,
    "key_size": int, "stored_key_count": int, "max_key_count": int, "max_key_per_request": int,
    "max_key_size": int, "min_key_size": int, "max_SAE_ID_count": int,
}
POOL = 50


# -- helpers ---------------------------------------------------------------------------------------

async def register(node: Node, sae: str, pool: int = POOL, email: str | None = None) -> None:
    """Register over the node's transport. Under TLS the call must present a certificate
    (``Node.register`` calls without one, which the KME refuses at the handshake), so it uses the
    SAE's own certificate (the register route does not look at the caller)."""
    caller = sae if node.pki is None or sae in node.pki.saes else ALICE
    status, body = await node.call(caller, "POST", f"{API}/register", json={
        "sae_id": sae, "user_email": email or f"{sae.lower()}@example.com",
        "initial_pool_size": pool})
    assert status == 201, body


@pytest.fixture
async def kme(tls_node: Node) -> Node:
    """The TLS node with alice, bob and carol registered (eve has a certificate, no account)."""
    for sae in (ALICE, BOB, CAROL):
        await register(tls_node, sae)
    return tls_node


def enc_path(slave: str) -> str:
    return f"{API}/{slave}/enc_keys"


def dec_path(master: str) -> str:
    return f"{API}/{master}/dec_keys"


def status_path(slave: str) -> str:
    return f"{API}/{slave}/status"


def ids_body(*ids: str) -> dict[str, Any]:
    return {"key_IDs": [{"key_ID": key_id} for key_id in ids]}


async def take(node: Node, master: str, slave: str, **request: Any) -> list[dict[str, str]]:
    """``master`` takes keys for ``slave`` (POST enc_keys); asserts 200 and the count."""
    status, body = await node.call(master, "POST", enc_path(slave), json=request)
    assert status == 200, body
    assert len(body["keys"]) == request.get("number", 1)
    return body["keys"]


async def stored(node: Node, slave: str, asker: str = ALICE) -> int:
    status, body = await node.call(asker, "GET", status_path(slave))
    assert status == 200, body
    return body["stored_key_count"]


def assert_error(status: int, body: Any, expected: int, message: str | None = None) -> None:
    """An ETSI Error body (Table 13): a JSON object with a string message, details objects."""
    assert status == expected, (status, body)
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    if message is not None:
        assert body["message"] == message
    if "details" in body:
        assert isinstance(body["details"], list)
        assert all(isinstance(item, dict) for item in body["details"])
    assert "keys" not in body


def key_bytes(keys: list[dict[str, str]]) -> list[int]:
    return [len(material) for material in decoded(keys).values()]


# -- cases 1-3: TLS and identity -------------------------------------------------------------------

async def test_a_client_without_a_certificate_never_gets_key_data(kme: Node) -> None:
    # Case 1: the handshake fails (CERT_REQUIRED) or, at most, the request is refused with 401.
    for method, path in (("GET", status_path(BOB)), ("POST", enc_path(BOB))):
        try:
            status, body = await kme.call(None, method, path)
        except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
            continue
        assert status == 401 and "keys" not in (body or {}), (status, body)
    assert await stored(kme, BOB) == POOL


async def test_a_certificate_from_an_untrusted_ca_is_refused_at_the_handshake(
        kme: Node, tmp_path) -> None:
    # Case 2: same CN as a registered SAE, but issued by another CA.
    rogue = write_pki(tmp_path / "rogue", [], [ALICE])
    assert kme.pki is not None
    context = client_ssl_context(kme.pki.ca_cert, *rogue.saes[ALICE])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with session.post(kme.url + enc_path(BOB)) as response:
                await response.read()
    assert await stored(kme, BOB) == POOL


async def test_a_client_refuses_a_kme_whose_certificate_it_cannot_verify(
        kme: Node, tmp_path) -> None:
    # Case 2, other direction (§5.1): the SAE confirms the KME's identity from its certificate.
    rogue = write_pki(tmp_path / "rogue", [], [ALICE])
    assert kme.pki is not None
    context = client_ssl_context(rogue.ca_cert, *kme.pki.saes[ALICE])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(kme.url + status_path(BOB)) as response:
                await response.read()


async def raw_get(node: Node, context: ssl.SSLContext, path: str) -> tuple[str, int, Any]:
    """One HTTP/1.1 GET on a fresh TLS connection: (negotiated TLS version, status, JSON body)."""
    assert node.served is not None and node.served.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", node.served.port, ssl=context,
                                                   server_hostname="127.0.0.1")
    try:
        version = writer.get_extra_info("ssl_object").version()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode("ascii"))
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return version, int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
                         ids=["TLSv1.2", "TLSv1.3"])
async def test_tls_1_2_and_tls_1_3_handshakes_both_succeed(kme: Node, version, name) -> None:
    # Case 3.
    assert kme.pki is not None
    context = client_ssl_context(kme.pki.ca_cert, *kme.pki.saes[ALICE])
    context.minimum_version = context.maximum_version = version
    negotiated, status, body = await raw_get(kme, context, status_path(BOB))
    assert negotiated == name
    assert status == 200, body
    assert body["master_SAE_ID"] == ALICE


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_is_refused(kme: Node) -> None:
    # Case 3: the client is allowed to offer only TLS 1.0/1.1 (security level 0); the KME refuses.
    assert kme.pki is not None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(kme.pki.ca_cert))
    context.load_cert_chain(*map(str, kme.pki.saes[ALICE]))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with session.get(kme.url + status_path(BOB)) as response:
                await response.read()


# -- case 4: a valid certificate without an account ------------------------------------------------

async def test_an_unregistered_sae_with_a_valid_certificate_gets_401_on_all_three_endpoints(
        kme: Node) -> None:
    # Case 4 (eve has a certificate from the trusted CA but is not registered).
    [key] = await take(kme, ALICE, BOB)
    attempts = [
        ("GET", status_path(BOB), {}),
        ("GET", enc_path(BOB), {}),
        ("POST", enc_path(BOB), {"json": {"number": 1}}),
        ("GET", dec_path(ALICE), {"params": {"key_ID": key["key_ID"]}}),
        ("POST", dec_path(ALICE), {"json": ids_body(key["key_ID"])}),
    ]
    for method, path, kwargs in attempts:
        status, body = await kme.call(EVE, method, path, **kwargs)
        assert_error(status, body, 401)
    assert await stored(kme, BOB) == POOL - 1
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert status == 200 and body["keys"] == [key]


# -- case 5: content type --------------------------------------------------------------------------

async def test_every_json_reply_is_application_json_in_utf_8(kme: Node) -> None:
    # Case 5: 200 (status, keys) and errors (400, 401, 404, 503) alike.
    requests = [
        (ALICE, "GET", status_path(BOB), {}, 200),
        (ALICE, "GET", enc_path(BOB), {}, 200),
        (ALICE, "POST", enc_path(BOB), {"json": {"size": 257}}, 400),
        (EVE, "GET", status_path(BOB), {}, 401),
        (ALICE, "GET", status_path("SAE_NOBODY"), {}, 404),
        (ALICE, "POST", enc_path(BOB), {"json": {"number": POOL}}, 503),
    ]
    for sae, method, path, kwargs, expected in requests:
        async with kme.session(sae).request(method, path, **kwargs) as response:
            raw = await response.read()
            assert response.status == expected, raw
            assert response.content_type == "application/json"
            assert (response.charset or "utf-8").lower() == "utf-8"
            assert isinstance(json.loads(raw.decode("utf-8")), dict)


# -- cases 6-10: Get status ------------------------------------------------------------------------

async def test_status_has_the_eleven_etsi_fields_with_their_json_types(kme: Node) -> None:
    # Case 6 (the seed's pool fields are also present at top level: a project decision).
    status, body = await kme.call(ALICE, "GET", status_path(BOB))
    assert status == 200, body
    for name, kind in ETSI_STATUS_FIELDS.items():
        assert name in body, name
        assert isinstance(body[name], kind) and not isinstance(body[name], bool), (name, body[name])
    if "status_extension" in body:
        assert isinstance(body["status_extension"], dict)


async def test_status_names_the_caller_as_master_and_the_path_as_slave(kme: Node) -> None:
    # Case 7.
    for caller, slave in ((ALICE, BOB), (BOB, ALICE), (CAROL, BOB)):
        status, body = await kme.call(caller, "GET", status_path(slave))
        assert status == 200, body
        assert (body["master_SAE_ID"], body["slave_SAE_ID"]) == (caller, slave)


async def test_under_tls_an_x_sae_id_header_cannot_override_the_certificate(kme: Node) -> None:
    # Case 7: identity is the certificate; a header naming someone else is refused.
    status, body = await kme.call(EVE, "GET", status_path(BOB), headers={"X-SAE-ID": ALICE})
    assert_error(status, body, 401)
    status, body = await kme.call(ALICE, "GET", status_path(BOB), headers={"X-SAE-ID": ALICE})
    assert status == 200 and body["master_SAE_ID"] == ALICE


async def test_status_numbers_are_consistent_and_match_the_configuration(kme: Node) -> None:
    # Case 8, with the project's values (key_size 8192, sizes 64..8192, 100 per request,
    # no multicast).
    status, body = await kme.call(ALICE, "GET", status_path(BOB))
    assert status == 200, body
    assert body["min_key_size"] <= body["key_size"] <= body["max_key_size"]
    assert 0 <= body["stored_key_count"] <= body["max_key_count"]
    assert body["max_key_per_request"] >= 1 and body["max_SAE_ID_count"] >= 0
    assert (body["key_size"], body["min_key_size"], body["max_key_size"]) == (8192, 64, 8192)
    assert (body["max_key_per_request"], body["max_SAE_ID_count"]) == (100, 0)
    assert (body["stored_key_count"], body["max_key_count"]) == (POOL, POOL)


async def test_an_unknown_slave_is_404_with_an_error_body_on_status_and_enc_keys(kme: Node) -> None:
    # Case 9 (project decision: 404, not the reference's REC 400).
    for method, path in (("GET", status_path("SAE_NOBODY")), ("GET", enc_path("SAE_NOBODY")),
                         ("POST", enc_path("SAE_NOBODY"))):
        status, body = await kme.call(ALICE, method, path)
        assert_error(status, body, 404)


async def test_stored_key_count_falls_by_exactly_the_number_of_keys_taken(kme: Node) -> None:
    # Case 10 (the pools stay far above the sync threshold, so nothing is refilled meanwhile).
    await take(kme, ALICE, BOB, number=3)
    assert await stored(kme, BOB) == POOL - 3
    status, _ = await kme.call(ALICE, "GET", enc_path(BOB))
    assert status == 200
    assert await stored(kme, BOB) == POOL - 4
    assert await stored(kme, ALICE, asker=BOB) == POOL  # the master's own pool is untouched


# -- cases 11-27: Get key (enc_keys) ---------------------------------------------------------------

async def test_a_get_without_query_returns_one_key_of_the_default_size(kme: Node) -> None:
    # Case 11.
    status, body = await kme.call(ALICE, "GET", enc_path(BOB))
    assert status == 200, body
    assert key_bytes(body["keys"]) == [8192 // 8]


@pytest.mark.parametrize("kwargs", [{}, {"data": b""}, {"json": {}}],
                         ids=["no-body", "empty-body", "empty-object"])
async def test_a_post_with_no_body_or_an_empty_object_returns_one_default_key(
        kme: Node, kwargs) -> None:
    # Case 12.
    status, body = await kme.call(ALICE, "POST", enc_path(BOB), **kwargs)
    assert status == 200, body
    assert key_bytes(body["keys"]) == [1024]


async def test_three_keys_of_512_bits_by_get_query_and_by_post_body(kme: Node) -> None:
    # Case 13.
    status, body = await kme.call(ALICE, "GET", enc_path(BOB),
                                  params={"number": "3", "size": "512"})
    assert status == 200, body
    assert key_bytes(body["keys"]) == [64, 64, 64]
    keys = await take(kme, ALICE, BOB, number=3, size=512)
    assert key_bytes(keys) == [64, 64, 64]


async def test_key_ids_have_the_project_format_are_unique_and_never_repeat(kme: Node) -> None:
    # Case 14 (project decision: IDs are qk_{owner}_{seq:06d}, not UUIDs).
    seen: list[str] = []
    for request in ({"number": 5}, {"number": 4, "size": 256}, {"number": 1, "size": 8192},
                    {"number": 7, "size": 64}, {"number": 2}):
        keys = await take(kme, ALICE, BOB, **request)
        ids = [k["key_ID"] for k in keys]
        assert len(set(ids)) == len(ids)
        for key_id in ids:
            match = KEY_ID.fullmatch(key_id)
            assert match is not None and match["owner"] == BOB, key_id
        seen += ids
    keys = await take(kme, CAROL, BOB, number=3)  # another master, same pool
    seen += [k["key_ID"] for k in keys]
    assert len(set(seen)) == len(seen) == 22


async def test_keys_are_strict_standard_base64_with_padding(kme: Node) -> None:
    # Case 15: 256 bits -> 44 characters ending in '='.
    for size in (256, 8192, 72):
        [key] = await take(kme, ALICE, BOB, size=size)
        material = base64.b64decode(key["key"], validate=True)
        assert len(material) == size // 8
        assert base64.b64encode(material).decode("ascii") == key["key"]
        assert len(key["key"]) == 4 * ((size // 8 + 2) // 3)
    [key] = await take(kme, ALICE, BOB, size=256)
    assert len(key["key"]) == 44 and key["key"].endswith("=")


async def test_a_size_not_multiple_of_8_is_400_with_the_exact_message(kme: Node) -> None:
    # Case 16.
    status, body = await kme.call(ALICE, "GET", enc_path(BOB), params={"size": "257"})
    assert_error(status, body, 400, SIZE_NOT_MULTIPLE_OF_8)
    status, body = await kme.call(ALICE, "POST", enc_path(BOB), json={"size": 257})
    assert_error(status, body, 400, SIZE_NOT_MULTIPLE_OF_8)
    assert await stored(kme, BOB) == POOL


async def test_sizes_outside_64_to_8192_are_refused_and_every_multiple_of_8_inside_is_served(
        kme: Node) -> None:
    # Case 17.
    for size in (56, 8, 8200, 16384):
        status, body = await kme.call(ALICE, "POST", enc_path(BOB), json={"size": size})
        assert_error(status, body, 400)
    for size in (64, 72, 1000, 4096, 8184, 8192):
        [key] = await take(kme, ALICE, BOB, size=size)
        assert key_bytes([key]) == [size // 8]


async def test_number_equal_to_max_key_per_request_is_served_and_one_more_is_refused(
        tls_node: Node) -> None:
    # Case 18 (bob's pool is large enough for 100 default keys).
    await register(tls_node, ALICE, pool=20)
    await register(tls_node, BOB, pool=150)
    status, body = await tls_node.call(ALICE, "POST", enc_path(BOB), json={"number": 101})
    assert_error(status, body, 400)
    status, body = await tls_node.call(ALICE, "GET", enc_path(BOB), params={"number": "101"})
    assert_error(status, body, 400)
    assert await stored(tls_node, BOB) == 150
    keys = await take(tls_node, ALICE, BOB, number=100)
    assert len({k["key_ID"] for k in keys}) == 100


@pytest.mark.parametrize("method,kwargs", [
    ("GET", {"params": {"number": "0"}}),
    ("GET", {"params": {"number": "-1"}}),
    ("GET", {"params": {"number": "abc"}}),
    ("GET", {"params": {"number": "1.5"}}),
    ("GET", {"params": {"number": ""}}),
    ("POST", {"json": {"number": 0}}),
    ("POST", {"json": {"number": -1}}),
    ("POST", {"json": {"number": "3"}}),
    ("POST", {"json": {"number": 1.5}}),
    ("POST", {"json": {"number": True}}),
    ("POST", {"json": {"number": [1]}}),
])
async def test_an_invalid_number_is_400_and_never_an_empty_list(kme: Node, method, kwargs) -> None:
    # Case 19.
    status, body = await kme.call(ALICE, method, enc_path(BOB), **kwargs)
    assert_error(status, body, 400)
    assert await stored(kme, BOB) == POOL


@pytest.mark.parametrize("method,kwargs", [
    ("GET", {"params": {"size": "0"}}),
    ("GET", {"params": {"size": "-8"}}),
    ("GET", {"params": {"size": "abc01"}}),
    ("POST", {"json": {"size": 0}}),
    ("POST", {"json": {"size": -8}}),
    ("POST", {"json": {"size": "abc01"}}),
    ("POST", {"json": {"size": "256"}}),
    ("POST", {"json": {"size": 256.0}}),
])
async def test_an_invalid_size_is_400(kme: Node, method, kwargs) -> None:
    # Case 20.
    status, body = await kme.call(ALICE, method, enc_path(BOB), **kwargs)
    assert_error(status, body, 400)
    assert await stored(kme, BOB) == POOL


@pytest.mark.parametrize("raw", [b"{", b"{'number': 1}", b"[]", b'[{"number": 1}]', b"3",
                                 b'"text"', b"null", b"\xff\xfe"])
async def test_malformed_json_or_a_non_object_body_is_400_on_enc_and_dec_keys(
        kme: Node, raw) -> None:
    # Case 21.
    headers = {"Content-Type": "application/json"}
    for path in (enc_path(BOB), dec_path(ALICE)):
        status, body = await kme.call(ALICE if path == enc_path(BOB) else BOB, "POST", path,
                                      data=raw, headers=headers)
        assert_error(status, body, 400)
    assert await stored(kme, BOB) == POOL


async def test_an_unknown_mandatory_extension_is_400_with_the_exact_message(kme: Node) -> None:
    # Case 22.
    status, body = await kme.call(ALICE, "POST", enc_path(BOB),
                                  json={"extension_mandatory": [{"zz_unknown": 1}]})
    assert_error(status, body, 400, EXT_UNSUPPORTED)
    assert "details" in body and "zz_unknown" in json.dumps(body["details"])
    assert await stored(kme, BOB) == POOL


async def test_an_unknown_optional_extension_is_ignored(kme: Node) -> None:
    # Case 23.
    keys = await take(kme, ALICE, BOB, number=2, extension_optional=[{"zz_unknown": 1}])
    assert key_bytes(keys) == [1024, 1024]


@pytest.mark.parametrize("extra", [[CAROL], [CAROL, EVE], [""], [CAROL, CAROL], [ALICE], [7], []])
async def test_any_additional_slave_is_400_because_multicast_is_unsupported(
        kme: Node, extra) -> None:
    # Cases 24 and 37 (max_SAE_ID_count is 0, so multicast is refused rather than tested).
    status, body = await kme.call(ALICE, "POST", enc_path(BOB),
                                  json={"number": 1, "additional_slave_SAE_IDs": extra})
    assert_error(status, body, 400)
    assert await stored(kme, BOB) == POOL
    assert await stored(kme, CAROL) == POOL


async def test_asking_for_keys_for_oneself_is_400(kme: Node) -> None:
    # Case 25.
    for method in ("GET", "POST"):
        status, body = await kme.call(ALICE, method, enc_path(ALICE))
        assert_error(status, body, 400)
    assert await stored(kme, ALICE, asker=BOB) == POOL


async def test_asking_for_more_keys_than_stored_is_503_and_hands_out_nothing(kme: Node) -> None:
    # Case 26.
    status, body = await kme.call(ALICE, "POST", enc_path(BOB), json={"number": POOL + 1})
    assert_error(status, body, 503)
    assert await stored(kme, BOB) == POOL
    await take(kme, ALICE, BOB, number=POOL - 6)  # 6 left: 12 %, above the refill threshold
    assert await stored(kme, BOB) == 6
    status, body = await kme.call(ALICE, "POST", enc_path(BOB), json={"number": 7})
    assert_error(status, body, 503)
    status, body = await kme.call(ALICE, "GET", enc_path(BOB), params={"number": "7"})
    assert_error(status, body, 503)
    assert await stored(kme, BOB) == 6
    assert len(await take(kme, ALICE, BOB, number=6)) == 6  # all six were still there


async def test_unknown_request_fields_are_ignored(kme: Node) -> None:
    # Case 27 (the TUe Rust client sends "additional_target_sae_ids").
    keys = await take(kme, ALICE, BOB, number=2, additional_target_sae_ids=[], zz_vendor={"a": 1})
    assert len(keys) == 2


# -- cases 28-36: Get key with key IDs (dec_keys) and the key lifecycle ----------------------------

async def test_the_slave_reads_the_masters_key_by_get_with_identical_bytes(kme: Node) -> None:
    # Case 28 (single KME: the key comes from bob's pool; bob reads with alice in the path).
    [key] = await take(kme, ALICE, BOB)
    status, body = await kme.call(BOB, "GET", dec_path(ALICE), params={"key_ID": key["key_ID"]})
    assert status == 200, body
    assert body["keys"] == [key]


async def test_three_ids_posted_together_return_the_masters_three_keys_in_order(kme: Node) -> None:
    # Case 29.
    keys = await take(kme, ALICE, BOB, number=3, size=512)
    wanted = [keys[2], keys[0], keys[1]]
    status, body = await kme.call(BOB, "POST", dec_path(ALICE),
                                  json=ids_body(*(k["key_ID"] for k in wanted)))
    assert status == 200, body
    assert body["keys"] == wanted


async def test_the_get_forms_with_repeated_or_comma_separated_key_ids_are_accepted(
        kme: Node) -> None:
    # Case 29 (project decision: GET with several IDs is accepted; reference §6 erratum 6).
    keys = await take(kme, ALICE, BOB, number=4)
    ids = [k["key_ID"] for k in keys]
    status, body = await kme.call(BOB, "GET", dec_path(ALICE),
                                  params=[("key_ID", ids[0]), ("key_ID", ids[1])])
    assert status == 200 and body["keys"] == keys[:2], body
    status, body = await kme.call(BOB, "GET", dec_path(ALICE), params={"key_ID": ",".join(ids[2:])})
    assert status == 200 and body["keys"] == keys[2:], body


async def test_a_key_is_delivered_to_its_slave_exactly_once(kme: Node) -> None:
    # Case 30.
    [key] = await take(kme, ALICE, BOB)
    status, _ = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert status == 200
    for method, kwargs in (("POST", {"json": ids_body(key["key_ID"])}),
                           ("GET", {"params": {"key_ID": key["key_ID"]}})):
        status, body = await kme.call(BOB, method, dec_path(ALICE), **kwargs)
        assert_error(status, body, 400, NOT_FOUND)


async def test_ids_that_were_never_delivered_are_not_found(kme: Node) -> None:
    # Case 31: a random UUID, a well-formed ID never issued, and an ID still in the pool.
    await take(kme, ALICE, BOB)  # qk_SAE_BOB_001_000001 is delivered; 000002 is still available
    for key_id in ("550e8400-e29b-41d4-a716-446655440000", f"qk_{BOB}_999999",
                   f"qk_{BOB}_000002"):
        status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key_id))
        assert_error(status, body, 400, NOT_FOUND)
    assert await stored(kme, BOB) == POOL - 1


@pytest.mark.parametrize("method,kwargs", [
    ("GET", {"params": {"key_ID": "not a key id"}}),
    ("POST", {"json": ids_body("not a key id")}),
    ("POST", {"json": {"key_IDs": [{"key_ID": 123}]}}),
    ("POST", {"json": {"key_IDs": ["qk_SAE_BOB_001_000001"]}}),
    ("POST", {"json": {"key_IDs": [{"id": "qk_SAE_BOB_001_000001"}]}}),
    ("POST", {"json": {"key_IDs": {"key_ID": "qk_SAE_BOB_001_000001"}}}),
])
async def test_a_malformed_key_id_is_400(kme: Node, method, kwargs) -> None:
    # Case 32 (our IDs are not UUIDs, so a malformed one is simply not found or badly typed).
    await take(kme, ALICE, BOB)
    status, body = await kme.call(BOB, method, dec_path(ALICE), **kwargs)
    assert_error(status, body, 400)
    status, body = await kme.call(BOB, "GET", dec_path(ALICE),
                                  params={"key_ID": f"qk_{BOB}_000001"})
    assert status == 200, body  # the malformed attempt consumed nothing


async def test_an_sae_not_named_as_slave_gets_401_and_consumes_nothing(kme: Node) -> None:
    # Case 33: eve (registered, never named), carol, and alice (the master herself).
    await register(kme, EVE, pool=POOL)
    [key] = await take(kme, ALICE, BOB)
    for intruder in (EVE, CAROL, ALICE):
        status, body = await kme.call(intruder, "POST", dec_path(ALICE),
                                      json=ids_body(key["key_ID"]))
        assert_error(status, body, 401)
        status, body = await kme.call(intruder, "GET", dec_path(ALICE),
                                      params={"key_ID": key["key_ID"]})
        assert_error(status, body, 401)
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert status == 200 and body["keys"] == [key]


async def test_the_slave_naming_the_wrong_master_gets_no_key_and_consumes_nothing(
        kme: Node) -> None:
    # Case 34.
    [key] = await take(kme, ALICE, BOB)
    for master in (CAROL, "SAE_NOBODY", BOB):
        status, body = await kme.call(BOB, "POST", dec_path(master), json=ids_body(key["key_ID"]))
        assert_error(status, body, 400, NOT_FOUND)
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert status == 200 and body["keys"] == [key]


async def test_one_bad_id_among_good_ones_fails_the_whole_request(kme: Node) -> None:
    # Case 35: all or nothing, for an unknown ID and for a key owed to another slave.
    keys = await take(kme, ALICE, BOB, number=2)
    [carols] = await take(kme, ALICE, CAROL)
    good = [k["key_ID"] for k in keys]
    status, body = await kme.call(BOB, "POST", dec_path(ALICE),
                                  json=ids_body(good[0], f"qk_{BOB}_777777", good[1]))
    assert_error(status, body, 400, NOT_FOUND)
    status, body = await kme.call(BOB, "POST", dec_path(ALICE),
                                  json=ids_body(good[0], carols["key_ID"]))
    assert_error(status, body, 401)
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(*good))
    assert status == 200 and body["keys"] == keys
    status, body = await kme.call(CAROL, "POST", dec_path(ALICE), json=ids_body(carols["key_ID"]))
    assert status == 200 and body["keys"] == [carols]


@pytest.mark.parametrize("method,kwargs", [
    ("POST", {"json": {"key_IDs": []}}),
    ("POST", {"json": {}}),
    ("POST", {}),
    ("POST", {"json": {"key_IDs": None}}),
    ("POST", {"json": ids_body("")}),
    ("GET", {}),
    ("GET", {"params": {"key_ID": ""}}),
    ("GET", {"params": {"key_ID": ","}}),
    ("GET", {"params": {"key_id": "qk_SAE_BOB_001_000001"}}),
])
async def test_an_empty_or_missing_list_of_key_ids_is_400(kme: Node, method, kwargs) -> None:
    # Case 36.
    await take(kme, ALICE, BOB)
    status, body = await kme.call(BOB, method, dec_path(ALICE), **kwargs)
    assert_error(status, body, 400)


async def test_a_key_id_repeated_in_one_request_is_400_and_consumes_nothing(kme: Node) -> None:
    # Case 36 (project decision).
    [key] = await take(kme, ALICE, BOB)
    for method, kwargs in (("POST", {"json": ids_body(key["key_ID"], key["key_ID"])}),
                           ("GET", {"params": {"key_ID": f"{key['key_ID']},{key['key_ID']}"}})):
        status, body = await kme.call(BOB, method, dec_path(ALICE), **kwargs)
        assert_error(status, body, 400)
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert status == 200 and body["keys"] == [key]


async def test_more_key_ids_than_max_key_per_request_is_400(kme: Node) -> None:
    # Case 36 neighbour: the dec_keys side honours max_key_per_request too.
    ids = [f"qk_{BOB}_{seq:06d}" for seq in range(1, 102)]
    status, body = await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(*ids))
    assert_error(status, body, 400)


# -- case 37: multicast is unsupported (see test_any_additional_slave_is_400...) -------------------

async def test_status_advertises_no_multicast_and_a_listed_extra_slave_cannot_read(
        kme: Node) -> None:
    # Case 37: with max_SAE_ID_count 0 the KME refuses multicast; carol never becomes a slave.
    status, body = await kme.call(ALICE, "GET", status_path(BOB))
    assert status == 200 and body["max_SAE_ID_count"] == 0
    status, body = await kme.call(ALICE, "POST", enc_path(BOB),
                                  json={"additional_slave_SAE_IDs": [CAROL]})
    assert_error(status, body, 400)
    [key] = await take(kme, ALICE, BOB)
    status, body = await kme.call(CAROL, "POST", dec_path(ALICE), json=ids_body(key["key_ID"]))
    assert_error(status, body, 401)


# -- case 38: master and slave on the same KME -----------------------------------------------------

async def test_on_one_kme_the_receivers_pool_pays_and_the_receiver_reads_once(kme: Node) -> None:
    # Case 38: alice sends to carol; the keys come from carol's pool, carol reads each once.
    keys = await take(kme, ALICE, CAROL, number=2)
    assert all(KEY_ID.fullmatch(k["key_ID"])["owner"] == CAROL for k in keys)
    assert await stored(kme, CAROL) == POOL - 2
    assert await stored(kme, ALICE, asker=CAROL) == POOL
    status, body = await kme.call(CAROL, "POST", dec_path(ALICE),
                                  json=ids_body(*(k["key_ID"] for k in keys)))
    assert status == 200 and body["keys"] == keys
    status, body = await kme.call(CAROL, "POST", dec_path(ALICE), json=ids_body(keys[0]["key_ID"]))
    assert_error(status, body, 400, NOT_FOUND)
    assert await stored(kme, CAROL) == POOL - 2  # reading does not take more from the pool


# -- case 39: URL-encoded SAE IDs ------------------------------------------------------------------

ODD_IDS = {"sae x": "sae%20x", "a/b": "a%2Fb"}


def encoded(node: Node, path: str) -> yarl.URL:
    return yarl.URL(node.url + path, encoded=True)


async def test_url_encoded_sae_ids_with_a_space_or_a_slash_are_decoded_and_matched(
        node: Node) -> None:
    # Case 39 over HTTP (X-SAE-ID carries the raw ID). aiohttp >= 3.10 routes on the path with
    # %2F kept encoded and decodes each match_info value, so "a%2Fb" is one segment, "a/b".
    for index, sae in enumerate([*ODD_IDS, ALICE]):
        await node.register(sae, email=f"user{index}@example.com", pool=20)
    for sae, quoted in ODD_IDS.items():
        status, body = await node.call(ALICE, "GET", encoded(node, status_path(quoted)))
        assert status == 200, body
        assert (body["master_SAE_ID"], body["slave_SAE_ID"]) == (ALICE, sae)
    # "sae x" sends to "a/b", who reads it back naming "sae x" as master; and the reverse.
    for master, slave in (("sae x", "a/b"), ("a/b", "sae x")):
        status, body = await node.call(master, "POST", encoded(node, enc_path(ODD_IDS[slave])),
                                       json={"number": 2, "size": 256})
        assert status == 200, body
        keys = body["keys"]
        assert all(KEY_ID.fullmatch(k["key_ID"])["owner"] == slave for k in keys)
        status, body = await node.call(master, "GET", encoded(node, status_path(ODD_IDS[slave])))
        assert body["stored_key_count"] == 19  # one 8192-bit row carved into 256-bit keys
        status, body = await node.call(slave, "GET", encoded(node, dec_path(ODD_IDS[master])),
                                       params={"key_ID": keys[0]["key_ID"]})
        assert status == 200 and body["keys"] == keys[:1], body
        status, body = await node.call(slave, "POST", encoded(node, dec_path(ODD_IDS[master])),
                                       json=ids_body(keys[1]["key_ID"]))
        assert status == 200 and body["keys"] == keys[1:], body
    # The decoded slash must not be confused with a path separator or another SAE.
    status, body = await node.call(ALICE, "GET", f"{API}/a/b/status")
    assert_error(status, body, 404)
    status, body = await node.call(ALICE, "GET", encoded(node, status_path("sae%2520x")))
    assert_error(status, body, 404)  # %25 decodes once, to the literal "sae%20x"


async def test_url_encoded_sae_ids_match_certificate_common_names_under_tls(tls_node: Node) -> None:
    # Case 39 under mutual TLS: certificates whose CN holds a space and a slash.
    assert tls_node.pki is not None
    extra = write_pki(tls_node.pki.ca_cert.parent, [], list(ODD_IDS))  # same CA, reused
    tls_node.pki.saes.update(extra.saes)
    for index, sae in enumerate(ODD_IDS):
        await register(tls_node, sae, pool=20, email=f"user{index}@example.com")
    status, body = await tls_node.call("sae x", "POST", encoded(tls_node, enc_path("a%2Fb")))
    assert status == 200, body
    [key] = body["keys"]
    status, body = await tls_node.call("a/b", "GET", encoded(tls_node, status_path("sae%20x")))
    assert status == 200 and body["master_SAE_ID"] == "a/b" and body["slave_SAE_ID"] == "sae x"
    status, body = await tls_node.call("a/b", "POST", encoded(tls_node, dec_path("sae%20x")),
                                       json=ids_body(key["key_ID"]))
    assert status == 200 and body["keys"] == [key], body


# -- case 40: concurrency --------------------------------------------------------------------------

async def test_fifty_parallel_enc_keys_calls_give_fifty_distinct_keys(tls_node: Node) -> None:
    # Case 40 (bob's pool of 120 stays above the refill threshold after 50 are taken).
    await register(tls_node, ALICE, pool=20)
    await register(tls_node, BOB, pool=120)
    replies = await asyncio.gather(*(
        tls_node.call(ALICE, "POST" if i % 2 else "GET", enc_path(BOB)) for i in range(50)))
    assert [status for status, _ in replies] == [200] * 50
    ids = [key["key_ID"] for _, body in replies for key in body["keys"]]
    materials = [key["key"] for _, body in replies for key in body["keys"]]
    assert len(ids) == len(set(ids)) == 50
    assert len(set(materials)) == 50
    assert await stored(tls_node, BOB) == 120 - 50


async def test_ten_parallel_reads_of_one_key_deliver_it_exactly_once(kme: Node) -> None:
    # Case 40.
    [key] = await take(kme, ALICE, BOB)
    replies = await asyncio.gather(*(
        kme.call(BOB, "POST" if i % 2 else "GET", dec_path(ALICE),
                 **({"json": ids_body(key["key_ID"])} if i % 2 else
                    {"params": {"key_ID": key["key_ID"]}}))
        for i in range(10)))
    winners = [body for status, body in replies if status == 200]
    assert winners == [{"keys": [key]}]
    for status, body in replies:
        if status != 200:
            assert_error(status, body, 400, NOT_FOUND)


# -- case 41: the shape of every error -------------------------------------------------------------

async def test_every_error_on_the_etsi_routes_is_a_bare_etsi_error_object(kme: Node) -> None:
    # Case 41: 400/401/404/405/413/503 all carry {"message": str[, "details": [objects]]} and
    # nothing else (the seed's "success"/"error" fields belong to the seed's routes only).
    [key] = await take(kme, ALICE, BOB)
    requests = [
        (ALICE, "POST", enc_path(BOB), {"json": {"size": 257}}, 400),
        (ALICE, "POST", enc_path(BOB), {"json": {"number": "x"}}, 400),
        (ALICE, "POST", enc_path(BOB), {"json": {"extension_mandatory": [{"zz": 1}]}}, 400),
        (ALICE, "POST", enc_path(BOB), {"data": b"{", "headers": {"Content-Type":
                                                                  "application/json"}}, 400),
        (BOB, "POST", dec_path(ALICE), {"json": ids_body("nope")}, 400),
        (EVE, "GET", status_path(BOB), {}, 401),
        (CAROL, "POST", dec_path(ALICE), {"json": ids_body(key["key_ID"])}, 401),
        (ALICE, "GET", status_path("SAE_NOBODY"), {}, 404),
        (ALICE, "DELETE", enc_path(BOB), {}, 405),
        (ALICE, "POST", enc_path(BOB), {"data": b" " * (65 * 1024)}, 413),
        (ALICE, "POST", enc_path(BOB), {"json": {"number": POOL}}, 503),
    ]
    for sae, method, path, kwargs, expected in requests:
        status, body = await kme.call(sae, method, path, **kwargs)
        assert_error(status, body, expected)
        assert set(body) <= {"message", "details"}, (path, body)


# -- case 42: oversized inputs ---------------------------------------------------------------------

@pytest.mark.parametrize("method,kwargs", [
    ("GET", {"params": {"number": str(10 ** 9)}}),
    ("GET", {"params": {"number": str(10 ** 30)}}),
    ("GET", {"params": {"size": str(2 ** 31)}}),
    ("GET", {"params": {"size": "9" * 5000}}),
    ("POST", {"json": {"number": 10 ** 9}}),
    ("POST", {"json": {"number": 10 ** 300}}),
    ("POST", {"json": {"size": 2 ** 31}}),
    ("POST", {"data": b'{"size": 1e999}'}),
])
async def test_huge_numbers_and_sizes_are_refused_quickly(kme: Node, method, kwargs) -> None:
    # Case 42.
    started = time.monotonic()
    status, body = await kme.call(ALICE, method, enc_path(BOB), **kwargs)
    assert time.monotonic() - started < 5
    assert_error(status, body, 400)
    assert await stored(kme, BOB) == POOL


async def test_a_ten_megabyte_body_is_413_quickly_and_the_server_keeps_serving(kme: Node) -> None:
    # Case 42 (bodies over 64 KiB are refused), on each POST route including the seed's register.
    big = b'{"number": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    for sae, path in ((ALICE, enc_path(BOB)), (BOB, dec_path(ALICE)), (CAROL, f"{API}/register")):
        started = time.monotonic()
        status, body = await kme.call(sae, "POST", path, data=big,
                                      headers={"Content-Type": "application/json"})
        assert time.monotonic() - started < 5
        assert status == 413, body
        assert isinstance(body, dict) and isinstance(body.get("message"), str)
    assert await stored(kme, BOB) == POOL
    keys = await take(kme, ALICE, BOB)
    assert len(keys) == 1


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(kme: Node) -> None:
    # Case 42: chunked transfer encoding cannot sneak past the 64 KiB limit.
    async def chunks():
        for _ in range(160):  # 10 MiB in 64 KiB chunks
            yield b" " * (64 * 1024)

    status, body = await kme.call(ALICE, "POST", enc_path(BOB), data=chunks())
    assert status == 413, body
    assert await stored(kme, BOB) == POOL


# -- case 43: no key material in logs or on non-014 routes -----------------------------------------

def fingerprints(material: bytes) -> list[str]:
    """Strings that would betray (a prefix of) the material in text."""
    text = base64.b64encode(material).decode("ascii")
    return [text, text[:24], material[:12].hex(), repr(material[:12])[2:-1]]


async def test_no_key_material_appears_in_the_servers_log_records(kme: Node, caplog) -> None:
    # Case 43: everything the server logs at DEBUG during deliveries, reads and failures.
    caplog.set_level(logging.DEBUG)
    keys = await take(kme, ALICE, BOB, number=3, size=256)
    keys += await take(kme, ALICE, CAROL, number=2)
    await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(keys[0]["key_ID"]))
    await kme.call(BOB, "GET", dec_path(ALICE), params={"key_ID": keys[0]["key_ID"]})  # repeat
    await kme.call(EVE, "POST", dec_path(ALICE), json=ids_body(keys[1]["key_ID"]))
    await kme.call(CAROL, "POST", dec_path(ALICE), json=ids_body(keys[1]["key_ID"]))
    await kme.call(BOB, "POST", dec_path(ALICE), json=ids_body(keys[1]["key_ID"], "x"))
    await kme.call(ALICE, "POST", enc_path(BOB), json={"number": 10 ** 6})
    await kme.call(CAROL, "POST", dec_path(ALICE), json=ids_body(keys[3]["key_ID"]))
    assert caplog.records is not None
    log_text = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for material in decoded(keys).values():
        for fingerprint in fingerprints(material):
            assert fingerprint not in log_text


async def test_non_014_routes_never_return_key_material(kme: Node) -> None:
    # Case 43: the seed's and QuMail's routes expose counts and states, never key bytes.
    keys = await take(kme, ALICE, BOB, number=2)
    materials = list(decoded(keys).values())
    rows = await stored_rows(kme.lkm.store,
                             "SELECT key_data FROM quantum_keys WHERE key_data IS NOT NULL")
    materials += [bytes(row[0]) for row in rows]  # every key still stored, delivered or not
    assert len(materials) >= 3 * POOL
    replies = [
        await kme.call(OPERATOR, "GET", f"{API}/pools"),
        await kme.call(OPERATOR, "GET", f"{API}/km/status"),
        await kme.call(OPERATOR, "POST", f"{API}/km/sync", json={}),
        await kme.call(ALICE, "GET", "/health"),
        await kme.call(ALICE, "GET", "/api/v1/kme/status"),
        await kme.call(BOB, "POST", f"{API}/mark_consumed", json={"key_ID": keys[0]["key_ID"]}),
        await kme.call(OPERATOR, "POST", f"{API}/{BOB}/refill", json={"keys_to_add": 1}),
        await kme.call(ALICE, "GET", status_path(BOB)),
        await kme.call(OPERATOR, "GET", "/api/v1/user-keys/pools"),
    ]
    assert all(status == 200 for status, _ in replies), replies
    text = json.dumps([body for _, body in replies])
    for material in materials:
        for fingerprint in fingerprints(material)[:3]:
            assert fingerprint not in text
