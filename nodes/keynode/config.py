"""Configuration of one LKM, from the seed's environment variables or from a scenario."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

KEY_SIZE_BITS = 8192  # the seed's 1 KB keys
#: key-manager semantics: strict ETSI GS QKD 014, or QuMail's own key manager's (README section
#: "Point QuMail at a simulated network")
PROFILES = ("etsi", "qumail")
#: where a status body carries the pool's own fields (docs/conformance.md): in
#: ``status_extension`` only (etsi), also at the top level (seed), or by the caller's mode (auto)
STATUS_SHAPES = ("auto", "etsi", "seed")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """The seed's hybrid sync: scheduled, below threshold, below emergency (fractions of the limit)."""

    interval_s: float = 24 * 3600.0
    threshold: float = 0.10
    emergency: float = 0.05


@dataclass(frozen=True, slots=True)
class SenderQuota:
    """How much of a receiver's pool one sender may take: a token bucket of ``burst`` keys,
    refilled at ``keys_per_hour``, in the node's time (virtual in a simulation, wall served)."""

    keys_per_hour: float
    burst: int

    def __post_init__(self) -> None:
        if not self.keys_per_hour > 0 or self.burst < 1:
            raise ConfigError("sender quota: keys_per_hour must be > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    kme_id: str = "1"
    local_km_id: str = "LOCAL_KM_001"
    host: str = "127.0.0.1"
    port: int = 8010
    use_https: bool = False
    next_door_km_url: str = "http://localhost:8010"
    db_path: str = "user_key_pools.db"
    max_keys_per_request: int = 100
    key_size_bits: int = KEY_SIZE_BITS
    min_key_size_bits: int = 64
    max_key_size_bits: int = KEY_SIZE_BITS
    default_pool_size: int = 1000
    min_pool_size: int = 10
    max_pool_size: int = 10000
    max_body_bytes: int = 64 * 1024
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    tls: TlsFiles | None = None
    # SQLite on the event loop's thread instead of aiosqlite's (the simulator's virtual clock)
    inline_store: bool = False
    store_cache_kib: int | None = None  # an inline store's page cache (None: the most)
    seed: int = 0  # of the jitter on sync retries (a simulation passes its scenario's seed)
    profile: str = "etsi"
    status_shape: str = "auto"
    # who may use the admin routes (docs/architecture.md, "Who may do what"): client
    # certificate CNs under mutual TLS, and a bearer token (never printed: repr=False)
    operators: tuple[str, ...] = ()
    admin_token: str | None = field(default=None, repr=False)
    sender_quota: SenderQuota | None = None
    # AES-256-GCM key for key material at rest (32 bytes; never printed: repr=False)
    master_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key_size_bits % 8 or self.key_size_bits <= 0:
            raise ConfigError(f"key_size_bits: {self.key_size_bits} is not a positive multiple of 8")
        if not 8 <= self.min_key_size_bits <= self.key_size_bits <= self.max_key_size_bits:
            raise ConfigError("key sizes: need 8 <= min_key_size <= key_size <= max_key_size")
        if self.max_key_size_bits % self.key_size_bits:
            raise ConfigError("max_key_size_bits: longer keys join whole stored keys, so it "
                              "must be a multiple of key_size_bits")
        if self.max_keys_per_request < 1:
            raise ConfigError("MAX_KEYS_PER_REQUEST: must be >= 1")
        if self.profile not in PROFILES:
            raise ConfigError(f"KM_PROFILE: {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.status_shape not in STATUS_SHAPES:
            raise ConfigError(f"STATUS_SHAPE: {self.status_shape!r} is not one of "
                              f"{', '.join(STATUS_SHAPES)}")
        if self.use_https and self.tls is None:
            raise ConfigError("USE_HTTPS: true needs CA_FILE, KME_CERT and KME_KEY")
        if self.master_key is not None and len(self.master_key) != 32:
            raise ConfigError("KEY_AT_REST: the master key must be 32 bytes (AES-256)")

    @property
    def open_admin(self) -> bool:
        """The seed's open admin routes: only on loopback, over plain HTTP, with no operator
        configured (anyone who can reach the node is then a process on this machine)."""
        return not (self.use_https or self.operators or self.admin_token) \
            and is_loopback(self.host)

    def pool_size_for(self, asked: int | None) -> tuple[int, dict[str, object]]:
        """The pool size a registration gets, and, when it is not what was asked for, why
        (``pool_size_requested`` and ``pool_size_note`` for the reply)."""
        size = asked or self.default_pool_size
        given = min(max(size, self.min_pool_size), self.max_pool_size)
        notes = [f"0 means the default, {self.default_pool_size}"] if asked == 0 else []
        if given != size:
            notes.append(f"clamped to [{self.min_pool_size}, {self.max_pool_size}]")
        if not notes:
            return given, {}
        return given, {"pool_size_requested": asked, "pool_size_note": "; ".join(notes)}

    @property
    def qumail(self) -> bool:
        """QuMail's semantics: a master may read its own key back once (Level 3), not-found
        is 404, and every copy of a key is consumed with it."""
        return self.profile == "qumail"

    @property
    def key_bytes(self) -> int:
        return self.key_size_bits // 8

    @property
    def base_url(self) -> str:
        scheme = "https" if self.use_https else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def with_values(self, **values: object) -> "NodeConfig":
        return replace(self, **values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "NodeConfig":
        """Read the seed's variables; a bad value raises ConfigError naming the variable."""
        values: dict[str, object] = {}
        for name, attr, parse in _ENV:
            if name in env and env[name] != "":
                values[attr] = _parse(name, env[name], parse)
        use_https = bool(values.get("use_https", False))
        if use_https:
            values["tls"] = _tls_from_env(env)
        if env.get("ADMIN_SAE_IDS"):
            values["operators"] = tuple(p.strip() for p in env["ADMIN_SAE_IDS"].split(",")
                                        if p.strip())
        if env.get("ADMIN_TOKEN"):
            values["admin_token"] = env["ADMIN_TOKEN"]
        if env.get("SENDER_QUOTA_KEYS_PER_HOUR"):
            rate = float(str(_parse("SENDER_QUOTA_KEYS_PER_HOUR",
                                    env["SENDER_QUOTA_KEYS_PER_HOUR"], float)))
            burst = int(str(_parse("SENDER_QUOTA_BURST", env.get("SENDER_QUOTA_BURST")
                                   or str(max(1, math.ceil(rate))), int)))
            try:
                values["sender_quota"] = SenderQuota(rate, burst)
            except ConfigError as error:
                raise ConfigError(f"SENDER_QUOTA_KEYS_PER_HOUR/SENDER_QUOTA_BURST: {error}") \
                    from None
        values["master_key"] = master_key_from_env(env)
        return cls(**values)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def master_key_from_env(env: Mapping[str, str]) -> bytes | None:
    """The at-rest key: ``KEY_AT_REST_FILE`` (a file holding 32 raw bytes, or 64 hex digits)
    or ``KEY_AT_REST`` (64 hex digits). Errors name the variable, never the key."""
    if env.get("KEY_AT_REST_FILE"):
        path = Path(env["KEY_AT_REST_FILE"])
        if not path.is_file():
            raise ConfigError(f"KEY_AT_REST_FILE: no such file {str(path)!r}")
        raw = path.read_bytes()
        return raw if len(raw) == 32 else _hex_key("KEY_AT_REST_FILE", raw.decode("ascii", "replace"))
    if env.get("KEY_AT_REST"):
        return _hex_key("KEY_AT_REST", env["KEY_AT_REST"])
    return None


def _hex_key(name: str, text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{name}: not 32 raw bytes or 64 hex digits") from None
    if len(key) != 32:
        raise ConfigError(f"{name}: the key must be 32 bytes (64 hex digits), got {len(key)}")
    return key


def _parse(name: str, raw: str, parse: type) -> object:
    try:
        if parse is bool:
            return _parse_bool(raw)
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}: invalid value {raw!r}") from None
    if parse in (int, float) and value < 0:
        raise ConfigError(f"{name}: must not be negative")
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _tls_from_env(env: Mapping[str, str]) -> TlsFiles:
    missing = [n for n in ("CA_FILE", "KME_CERT", "KME_KEY") if not env.get(n)]
    if missing:
        raise ConfigError(f"USE_HTTPS=true needs {', '.join(missing)}")
    files = TlsFiles(Path(env["CA_FILE"]), Path(env["KME_CERT"]), Path(env["KME_KEY"]))
    for name, path in zip(("CA_FILE", "KME_CERT", "KME_KEY"), (files.ca_cert, files.cert, files.key)):
        if not path.is_file():
            raise ConfigError(f"{name}: no such file {str(path)!r}")
    return files


_ENV: tuple[tuple[str, str, type], ...] = (
    ("KME_ID", "kme_id", str),
    ("LOCAL_KM_ID", "local_km_id", str),
    ("HOST", "host", str),
    ("PORT", "port", int),
    ("USE_HTTPS", "use_https", bool),
    ("NEXT_DOOR_KM_URL", "next_door_km_url", str),
    ("USER_KEY_POOL_DB", "db_path", str),
    ("MAX_KEYS_PER_REQUEST", "max_keys_per_request", int),
    ("KM_PROFILE", "profile", str),
    ("STATUS_SHAPE", "status_shape", str),
)

ENV_VARIABLES = tuple(name for name, _, _ in _ENV) + (
    "CA_FILE", "KME_CERT", "KME_KEY", "ADMIN_SAE_IDS", "ADMIN_TOKEN", "SENDER_QUOTA_KEYS_PER_HOUR",
    "SENDER_QUOTA_BURST", "KEY_AT_REST_FILE", "KEY_AT_REST")
assert {f.name for f in fields(NodeConfig)} >= {attr for _, attr, _ in _ENV}
