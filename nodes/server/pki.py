"""Test PKI for the simulated key managers (ETSI GS QKD 014 requires mutual TLS).

``write_pki`` creates a small certificate authority, one server certificate per
KME node and one client certificate per SAE, and writes them as PEM files.
``server_ssl_context`` / ``client_ssl_context`` build the matching mutual-TLS
contexts (TLS >= 1.2, client certificate required), and ``common_name_from_der``
recovers the SAE id from the peer certificate of a TLS connection.

All keys are ECDSA P-256. The certificates pass ``ssl.VERIFY_X509_STRICT``,
which both contexts switch on. Only ``cryptography`` and the stdlib are used.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import json
import os
import re
import shlex
import ssl
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "PkiFiles",
    "client_ssl_context",
    "common_name_from_der",
    "curl_example",
    "safe_file_stem",
    "server_ssl_context",
    "write_pki",
]

CA_STEM = "ca"
CA_COMMON_NAME = "qkdsim test CA"
CLOCK_SKEW = dt.timedelta(hours=1)
KEY_FILE_MODE = 0o600
MAX_PLAIN_STEM = 64
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# '+' never survives sanitising, so a hashed stem can never equal an unchanged id.
_HASH_SEPARATOR = "+"

_Key = ec.EllipticCurvePrivateKey
_Signer = tuple[x509.Certificate, _Key]


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Paths of the PEM files written by :func:`write_pki`."""

    ca_cert: Path
    ca_key: Path
    nodes: dict[str, tuple[Path, Path]]  # node id -> (cert, key)
    saes: dict[str, tuple[Path, Path]]  # SAE id -> (cert, key)


# ---------------------------------------------------------------- file names


def safe_file_stem(identifier: str) -> str:
    """A file-name-safe stem for an SAE/node id.

    Ids made only of ``[A-Za-z0-9._-]`` (not starting with '.', at most 64
    characters, not the reserved CA stem) are kept as they are. Any other id is
    sanitised and gets ``+<hash>`` appended, so distinct ids give distinct stems.
    """
    cleaned = _UNSAFE_CHARS.sub("_", identifier).lstrip(".")[:MAX_PLAIN_STEM]
    if cleaned == identifier and _is_unreserved(cleaned):
        return cleaned
    digest = hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned or 'id'}{_HASH_SEPARATOR}{digest}"


def _is_unreserved(stem: str) -> bool:
    """False for stems that would clash with the CA files (also on case-insensitive disks)."""
    return bool(stem) and stem.lower() != CA_STEM


def _check_distinct_stems(ids: Iterable[str]) -> None:
    """Refuse ids whose files would overwrite each other (e.g. a node and an SAE both named 'A')."""
    seen: dict[str, str] = {}
    for identifier in ids:
        stem = safe_file_stem(identifier).lower()
        if stem in seen:
            clash = f"ids {seen[stem]!r} and {identifier!r} would share the file stem {stem!r}"
            raise ValueError(clash)
        seen[stem] = identifier


# ---------------------------------------------------------------- PEM I/O


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file that is readable by the owner only, also when it already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), KEY_FILE_MODE)
        handle.write(data)


def _key_pem(key: _Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(out_dir: Path, stem: str, cert: x509.Certificate, key: _Key) -> tuple[Path, Path]:
    cert_path, key_path = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, _key_pem(key))
    return cert_path, key_path


# ---------------------------------------------------------------- certificates


def _new_key() -> _Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: _Key, not_after: dt.datetime
) -> x509.CertificateBuilder:
    """Subject, issuer, public key, random serial and a validity window starting an hour ago."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - CLOCK_SKEW)
        .not_valid_after(not_after)
    )


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer_key: _Key) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())


def _make_ca(valid_days: int) -> _Signer:
    """A self-signed CA certificate and its key."""
    key, name = _new_key(), _name(CA_COMMON_NAME)
    cert = (
        _builder(name, name, key, _now() + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    signer: _Signer,
    common_name: str,
    usage: x509.ObjectIdentifier,
    valid_days: int,
    san: x509.SubjectAlternativeName | None = None,
) -> tuple[x509.Certificate, _Key]:
    """A leaf certificate for ``common_name`` with one extended key usage, signed by the CA."""
    ca_cert, ca_key = signer
    key = _new_key()
    not_after = min(_now() + dt.timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    builder = (
        _builder(_name(common_name), ca_cert.subject, key, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_authority_key_id(ca_key), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _general_name(host: str) -> x509.GeneralName:
    """An IPAddress entry for IP literals, a DNSName entry otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or IP address")
    return x509.SubjectAlternativeName([_general_name(host) for host in hosts])


# ---------------------------------------------------------------- CA reuse


def _load_ca(cert_path: Path, key_path: Path) -> _Signer:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    return cert, key


def _ensure_ca(out_dir: Path, valid_days: int) -> _Signer:
    """Load ca.crt + ca.key from out_dir, or create and write a new CA if neither exists."""
    cert_path, key_path = out_dir / f"{CA_STEM}.crt", out_dir / f"{CA_STEM}.key"
    if cert_path.exists() and key_path.exists():
        return _load_ca(cert_path, key_path)
    if cert_path.exists() or key_path.exists():
        raise FileExistsError(f"{out_dir} holds only one of ca.crt / ca.key; not overwriting it")
    signer = _make_ca(valid_days)
    _write_pair(out_dir, CA_STEM, *signer)
    return signer


def _issue(
    out_dir: Path,
    signer: _Signer,
    identifier: str,
    usage: x509.ObjectIdentifier,
    valid_days: int,
    san: x509.SubjectAlternativeName | None = None,
) -> tuple[Path, Path]:
    """Issue a leaf certificate for ``identifier`` and write it as <stem>.crt / <stem>.key."""
    cert, key = _make_leaf(signer, identifier, usage, valid_days, san)
    return _write_pair(out_dir, safe_file_stem(identifier), cert, key)


# ---------------------------------------------------------------- public API


def write_pki(
    out_dir: Path,
    node_ids: Sequence[str],
    sae_ids: Sequence[str],
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    valid_days: int = 825,
) -> PkiFiles:
    """Create a CA, one server certificate per node and one client certificate per SAE.

    Node certificates: CN = node id, SAN = ``hosts`` (DNS names and IP addresses), EKU serverAuth.
    SAE certificates: CN = SAE id, EKU clientAuth. PEM files: ca.crt, ca.key, <stem>.crt and
    <stem>.key with ``stem = safe_file_stem(id)``; key files are chmod 0600. An existing CA in
    ``out_dir`` (ca.crt + ca.key) is reused, so new SAEs can be added to an existing folder.
    Raises ValueError when two ids would share a file stem (compared case-insensitively).
    """
    out_dir = Path(out_dir)
    _check_distinct_stems([*node_ids, *sae_ids])
    san = _san(hosts)
    out_dir.mkdir(parents=True, exist_ok=True)
    signer = _ensure_ca(out_dir, valid_days)
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    nodes = {node: _issue(out_dir, signer, node, server, valid_days, san) for node in node_ids}
    saes = {sae: _issue(out_dir, signer, sae, client, valid_days) for sae in sae_ids}
    return PkiFiles(out_dir / f"{CA_STEM}.crt", out_dir / f"{CA_STEM}.key", nodes, saes)


#: TLS 1.2 suites a node accepts: forward secrecy (ECDHE) and AEAD (AES-GCM, ChaCha20-Poly1305)
#: only, as in Mozilla's "intermediate" profile; no RSA key exchange, CBC, SHA-1 MACs, RC4, 3DES
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS >= 1.2 and strict X.509 checks (the default from Python 3.13 on)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def server_ssl_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server context: TLS >= 1.2, client certificate REQUIRED, trusting only ``ca_cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_cert))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED  # Purpose.CLIENT_AUTH defaults to CERT_NONE
    context.set_ciphers(SERVER_CIPHERS)  # TLS 1.2's; TLS 1.3 has only AEAD suites anyway
    return _harden(context)


def client_ssl_context(
    ca_cert: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """Client context trusting only ``ca_cert`` for the server; presents cert/key when given."""
    if (cert is None) != (key is None):
        raise ValueError("give both cert and key, or neither")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return _harden(context)


@functools.lru_cache(maxsize=4096)
def common_name_from_der(der: bytes | None) -> str | None:
    """The subject CN of a DER certificate; None for no certificate, no CN or malformed DER.

    Cached by the DER bytes (they are the certificate): an mTLS request asks twice (to
    authenticate and to log), and every request on a connection presents the same bytes."""
    if not der:
        return None
    try:
        subject = x509.load_der_x509_certificate(der).subject
    except ValueError:
        return None
    attributes = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def register_example(files: PkiFiles, sae_id: str, base_url: str = "https://127.0.0.1:8010",
                     pool_size: int = 100) -> str:
    """A ready-to-paste curl command: ``sae_id`` registers itself, with its own certificate
    (under mutual TLS an SAE may register itself)."""
    cert, key = (path.absolute() for path in files.saes[sae_id])
    body = json.dumps({"sae_id": sae_id, "user_email": f"{safe_file_stem(sae_id).lower()}"
                       "@example.com", "initial_pool_size": pool_size})
    parts = ["curl", "-sS", "--cacert", files.ca_cert.absolute(), "--cert", cert, "--key", key,
             "-X", "POST", f"{base_url.rstrip('/')}/api/v1/keys/register", "-H",
             "Content-Type: application/json", "-d", body]
    return " ".join(shlex.quote(str(part)) for part in parts)


def curl_example(
    files: PkiFiles, sae_id: str, slave_sae_id: str, base_url: str = "https://127.0.0.1:8010"
) -> str:
    """A ready-to-paste curl command: GET the key status towards ``slave_sae_id`` as ``sae_id``."""
    cert, key = (path.absolute() for path in files.saes[sae_id])
    slave = urllib.parse.quote(slave_sae_id, safe="")
    url = f"{base_url.rstrip('/')}/api/v1/keys/{slave}/status"
    ca_cert = files.ca_cert.absolute()
    parts = ["curl", "-sS", "--cacert", ca_cert, "--cert", cert, "--key", key, url]
    return " ".join(shlex.quote(str(part)) for part in parts)
