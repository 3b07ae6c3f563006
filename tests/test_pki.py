"""Tests for nodes.server.pki: certificate files, and mutual TLS against a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import stat
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodes.server.pki import (
    SERVER_CIPHERS,
    PkiFiles,
    client_ssl_context,
    common_name_from_der,
    curl_example,
    safe_file_stem,
    server_ssl_context,
    write_pki,
)

NODE = "KME_A"
ALICE = "SAE_ALICE_001"
BOB = "SAE_BOB_002"
SLAVE = "SAE_ZED_009"
TIMEOUT = aiohttp.ClientTimeout(total=15)


# ---------------------------------------------------------------- helpers


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject_cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def all_files(files: PkiFiles) -> Iterator[Path]:
    yield files.ca_cert
    yield files.ca_key
    for cert, key in [*files.nodes.values(), *files.saes.values()]:
        yield cert
        yield key


def key_files(files: PkiFiles) -> list[Path]:
    return [files.ca_key, *(key for _, key in [*files.nodes.values(), *files.saes.values()])]


def peer_ssl_object(request: web.Request) -> ssl.SSLObject:
    assert request.transport is not None
    return request.transport.get_extra_info("ssl_object")


def peer_cn(request: web.Request) -> str | None:
    return common_name_from_der(peer_ssl_object(request).getpeercert(binary_form=True))


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"cn": peer_cn(request), "tls": peer_ssl_object(request).version()})


async def key_status(request: web.Request) -> web.Response:
    slave = request.match_info["slave"]
    return web.json_response({"master_SAE_ID": peer_cn(request), "slave_SAE_ID": slave})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/api/v1/keys/{slave}/status", key_status)
    return app


@asynccontextmanager
async def running_server(context: ssl.SSLContext) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 (random port); yields its base URL."""
    runner = web.AppRunner(make_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get_json(url: str, context: ssl.SSLContext) -> dict[str, str]:
    """GET url with a fresh session (one session per TLS identity)."""
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.json()


def sae_context(files: PkiFiles, sae_id: str) -> ssl.SSLContext:
    return client_ssl_context(files.ca_cert, *files.saes[sae_id])


def pinned(context: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    context.minimum_version = version
    context.maximum_version = version
    return context


def allow_legacy_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Let a context speak TLS 1.0/1.1 (OpenSSL 3 needs security level 0 for that); may raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def tls_1_1_client(files: PkiFiles) -> ssl.SSLContext:
    """A client presenting a valid SAE certificate but speaking at most TLS 1.1."""
    if not ssl.HAS_TLSv1_1:
        pytest.skip("this OpenSSL was built without TLS 1.1")
    try:
        context = allow_legacy_tls(sae_context(files, ALICE))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"cannot build a TLS 1.1 client context here: {exc}")
    return context


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def pki(tmp_path: Path) -> PkiFiles:
    return write_pki(tmp_path / "pki", [NODE], [ALICE, BOB])


@pytest.fixture
def node_context(pki: PkiFiles) -> ssl.SSLContext:
    return server_ssl_context(pki.ca_cert, *pki.nodes[NODE])


@pytest.fixture
async def server_url(node_context: ssl.SSLContext) -> AsyncIterator[str]:
    async with running_server(node_context) as url:
        yield url


# ---------------------------------------------------------------- files and certificates


def test_write_pki_writes_ca_and_one_cert_and_key_per_node_and_sae(pki: PkiFiles) -> None:
    expected = ["ca", NODE, ALICE, BOB]
    names = sorted(path.name for path in all_files(pki))
    assert names == sorted(f"{stem}{suffix}" for stem in expected for suffix in (".crt", ".key"))
    assert sorted(path.name for path in pki.ca_cert.parent.iterdir()) == names
    assert all(path.is_file() and path.stat().st_size > 0 for path in all_files(pki))


def test_key_files_are_readable_by_the_owner_only(pki: PkiFiles) -> None:
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in key_files(pki)}
    assert modes == {path.name: 0o600 for path in key_files(pki)}


def test_sae_certificate_has_the_sae_id_as_common_name_and_client_auth(pki: PkiFiles) -> None:
    cert = load_cert(pki.saes[ALICE][0])
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert subject_cn(cert) == ALICE
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_node_certificate_san_names_localhost_and_127_0_0_1(pki: PkiFiles) -> None:
    cert = load_cert(pki.nodes[NODE][0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert subject_cn(cert) == NODE


def test_leaf_certificates_are_signed_by_the_ca(pki: PkiFiles) -> None:
    ca = load_cert(pki.ca_cert)
    for cert_path, _ in [*pki.nodes.values(), *pki.saes.values()]:
        load_cert(cert_path).verify_directly_issued_by(ca)  # raises if not


def test_second_write_pki_into_the_same_folder_reuses_the_ca(pki: PkiFiles) -> None:
    ca_before = pki.ca_cert.read_bytes()
    key_before = pki.ca_key.read_bytes()
    later = write_pki(pki.ca_cert.parent, [], ["SAE_CAROL_003"])
    assert later.ca_cert.read_bytes() == ca_before
    assert later.ca_key.read_bytes() == key_before
    load_cert(later.saes["SAE_CAROL_003"][0]).verify_directly_issued_by(load_cert(pki.ca_cert))


def test_write_pki_refuses_ids_that_would_share_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file stem"):
        write_pki(tmp_path, ["SAME"], ["SAME"])


def test_an_sae_called_ca_does_not_overwrite_the_ca_files(tmp_path: Path) -> None:
    files = write_pki(tmp_path, [NODE], ["ca"])
    assert subject_cn(load_cert(files.saes["ca"][0])) == "ca"
    assert files.saes["ca"][0] != files.ca_cert
    ca = load_cert(files.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    load_cert(files.saes["ca"][0]).verify_directly_issued_by(ca)


def test_awkward_ids_stay_inside_the_folder_and_keep_their_cn(tmp_path: Path) -> None:
    out_dir = tmp_path / "pki"
    files = write_pki(out_dir, [], ["../x", "a/b", "sae x"])
    for sae_id, (cert_path, key_path) in files.saes.items():
        assert cert_path.parent == out_dir and key_path.parent == out_dir
        assert subject_cn(load_cert(cert_path)) == sae_id
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pki"]


def test_contexts_verify_strictly_and_server_requires_client_certificates(pki: PkiFiles) -> None:
    server = server_ssl_context(pki.ca_cert, *pki.nodes[NODE])
    client = client_ssl_context(pki.ca_cert)
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_flags & ssl.VERIFY_X509_STRICT
    assert client.verify_flags & ssl.VERIFY_X509_STRICT
    assert client.check_hostname


def test_common_name_from_der_reads_the_cn_and_tolerates_no_certificate(pki: PkiFiles) -> None:
    der = load_cert(pki.saes[BOB][0]).public_bytes(Encoding.DER)
    assert common_name_from_der(der) == BOB
    assert common_name_from_der(b"") is None
    assert common_name_from_der(b"not a certificate") is None


def test_common_name_from_der_is_parsed_once_per_certificate(pki: PkiFiles) -> None:
    bob, alice = (load_cert(pki.saes[sae][0]).public_bytes(Encoding.DER) for sae in (BOB, ALICE))
    assert (common_name_from_der(bob), common_name_from_der(alice)) == (BOB, ALICE)
    hits = common_name_from_der.cache_info().hits
    assert [common_name_from_der(der) for der in (bob, alice, bob)] == [BOB, ALICE, BOB]
    assert common_name_from_der.cache_info().hits == hits + 3


# ---------------------------------------------------------------- mutual TLS


async def test_each_sae_identity_sees_its_own_common_name(pki: PkiFiles, server_url: str) -> None:
    alice, bob = await asyncio.gather(
        get_json(f"{server_url}/whoami", sae_context(pki, ALICE)),
        get_json(f"{server_url}/whoami", sae_context(pki, BOB)),
    )
    assert (alice["cn"], bob["cn"]) == (ALICE, BOB)


async def test_an_sae_added_later_is_accepted_by_a_running_server(
    pki: PkiFiles, server_url: str
) -> None:
    later = write_pki(pki.ca_cert.parent, [], ["SAE_CAROL_003"])
    answer = await get_json(f"{server_url}/whoami", sae_context(later, "SAE_CAROL_003"))
    assert answer["cn"] == "SAE_CAROL_003"


async def test_server_refuses_a_client_without_certificate(pki: PkiFiles, server_url: str) -> None:
    with pytest.raises(aiohttp.ClientError):
        await get_json(f"{server_url}/whoami", client_ssl_context(pki.ca_cert))


async def test_server_refuses_a_client_certificate_from_another_ca(
    pki: PkiFiles, server_url: str, tmp_path: Path
) -> None:
    stranger = write_pki(tmp_path / "other", [NODE], [ALICE])
    assert stranger.ca_cert.read_bytes() != pki.ca_cert.read_bytes()
    context = client_ssl_context(pki.ca_cert, *stranger.saes[ALICE])
    with pytest.raises(aiohttp.ClientError):
        await get_json(f"{server_url}/whoami", context)


async def test_client_refuses_a_server_from_another_ca(pki: PkiFiles, tmp_path: Path) -> None:
    stranger = write_pki(tmp_path / "other", [NODE], [])
    async with running_server(server_ssl_context(pki.ca_cert, *stranger.nodes[NODE])) as url:
        with pytest.raises(aiohttp.ClientError):
            await get_json(f"{url}/whoami", sae_context(pki, ALICE))


async def test_server_refuses_tls_1_1(pki: PkiFiles, server_url: str) -> None:
    client = tls_1_1_client(pki)
    # Control: the same client does reach a server that allows TLS 1.1, so the refusal
    # below comes from the server's minimum version and not from the local client.
    legacy_server = allow_legacy_tls(server_ssl_context(pki.ca_cert, *pki.nodes[NODE]))
    async with running_server(legacy_server) as legacy_url:
        try:
            control = await get_json(f"{legacy_url}/whoami", client)
        except aiohttp.ClientError as exc:
            pytest.skip(f"the local OpenSSL cannot complete a TLS 1.1 handshake at all: {exc}")
    assert control["tls"] == "TLSv1.1"
    with pytest.raises(aiohttp.ClientError):
        await get_json(f"{server_url}/whoami", client)


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
async def test_server_refuses_a_tls_1_2_client_offering_only_weak_suites(
        pki: PkiFiles, server_url: str, suite: str) -> None:
    # CBC with a SHA-1 or SHA-384 MAC (the node certificates are ECDSA): neither is offered
    client = pinned(sae_context(pki, ALICE), ssl.TLSVersion.TLSv1_2)
    try:
        client.set_ciphers(f"{suite}:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip(f"this OpenSSL does not know {suite}")
    # Control: a server with OpenSSL's default suites completes the handshake with this client
    default_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    default_server.load_cert_chain(*map(str, pki.nodes[NODE]))
    default_server.verify_mode = ssl.CERT_REQUIRED
    default_server.set_ciphers("DEFAULT:@SECLEVEL=0")
    async with running_server(default_server) as control_url:
        try:
            control = await get_json(f"{control_url}/whoami", client)
        except aiohttp.ClientError as exc:
            pytest.skip(f"the local OpenSSL cannot negotiate {suite} at all: {exc}")
    assert control == {"cn": ALICE, "tls": "TLSv1.2"}
    with pytest.raises(aiohttp.ClientError):
        await get_json(f"{server_url}/whoami", client)
    assert SERVER_CIPHERS and all("ECDHE" in c["name"] or c["protocol"] == "TLSv1.3"
                                  for c in server_ssl_context(pki.ca_cert, *pki.nodes[NODE])
                                  .get_ciphers())


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
async def test_server_accepts_a_client_pinned_to_tls_version(
    pki: PkiFiles, server_url: str, version: ssl.TLSVersion, name: str
) -> None:
    answer = await get_json(f"{server_url}/whoami", pinned(sae_context(pki, ALICE), version))
    assert answer == {"cn": ALICE, "tls": name}


# ---------------------------------------------------------------- file stems


def test_safe_file_stem_gives_distinct_safe_stems_and_keeps_plain_ids() -> None:
    ids = ["a/b", "../x", "sae x", "SAE_ALICE_001", "a_b", "..x", "x", "sae_x", "a\\b", ""]
    stems = [safe_file_stem(identifier) for identifier in ids]
    assert len(set(stems)) == len(ids)
    assert all(stem and "/" not in stem and "\\" not in stem for stem in stems)
    assert not any(stem.startswith(".") for stem in stems)
    assert safe_file_stem("SAE_ALICE_001") == "SAE_ALICE_001"


def test_safe_file_stem_is_deterministic() -> None:
    assert safe_file_stem("../x") == safe_file_stem("../x")


# ---------------------------------------------------------------- curl


def test_curl_example_quotes_paths_and_url_encodes_the_slave(tmp_path: Path) -> None:
    files = write_pki(tmp_path / "dir with space", [], [ALICE])
    command = curl_example(files, ALICE, "SAE/ZED 9", base_url="https://127.0.0.1:9")
    assert "https://127.0.0.1:9/api/v1/keys/SAE%2FZED%209/status" in command
    assert f"'{files.ca_cert.absolute()}'" in command
    assert "--cert" in command and "--key" in command


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_example_command_reaches_the_server_as_the_sae(
    pki: PkiFiles, server_url: str
) -> None:
    command = curl_example(pki, ALICE, SLAVE, base_url=server_url)
    # subprocess.run in a worker thread, so that the event loop keeps serving curl
    result = await asyncio.to_thread(
        subprocess.run, command, shell=True, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"master_SAE_ID": ALICE, "slave_SAE_ID": SLAVE}
