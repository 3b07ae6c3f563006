"""Test helpers: a real LKM served on 127.0.0.1 (HTTP or mutual TLS) and per-SAE clients."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from nodes.keynode.config import NodeConfig, TlsFiles
from nodes.keynode.store import KeyStore, audit, pools
from nodes.keynode.supply import LocalKeySupply
from nodes.server.pki import PkiFiles, client_ssl_context, write_pki
from nodes.server.serve import ServedNode
from simulator import ActorSystem
from simulator.clock import WallClock

API = "/api/v1/keys"
#: the operator of a TLS node (its certificate's CN is in ``operators``)
OPERATOR = "KM_OPERATOR"


class Node:
    """A served LKM and a cache of one client session per SAE identity."""

    def __init__(self, tmp: Path, tls: bool = False, supply: Any = None, observe: Any = None,
                 **config: Any) -> None:
        self.tmp = tmp
        self.tls = tls
        self.supply = supply or LocalKeySupply(os.urandom)
        self.observe = observe
        self.pki: PkiFiles | None = None
        self.config_values = config
        self.system = ActorSystem()
        self.served: ServedNode | None = None
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}

    async def start(self, saes: tuple[str, ...] = ()) -> "Node":
        values: dict[str, Any] = {"port": 0, "db_path": str(self.tmp / "lkm.db"), **self.config_values}
        if self.tls:
            self.pki = write_pki(self.tmp / "pki", ["kme"],
                                 [*(saes or ["SAE_ALICE_001"]), OPERATOR])
            cert, key = self.pki.nodes["kme"]
            values.update(use_https=True, tls=TlsFiles(self.pki.ca_cert, cert, key))
            values.setdefault("operators", (OPERATOR,))
        config = NodeConfig(**values)
        extra = {} if self.observe is None else {"observe": self.observe}
        self.served = ServedNode(config, self.system, WallClock(), self.supply, **extra)
        await self.served.start()
        return self

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    @property
    def lkm(self):  # the actor object, for white-box assertions on the store
        assert self.served is not None
        return self.served.lkm

    def session(self, sae: str | None) -> aiohttp.ClientSession:
        """A client acting as ``sae`` (certificate under TLS, X-SAE-ID otherwise)."""
        if sae not in self._sessions:
            headers = {} if sae is None or self.tls else {"X-SAE-ID": sae}
            connector = None
            if self.tls:
                assert self.pki is not None
                cert, key = self.pki.saes[sae] if sae is not None else (None, None)
                connector = aiohttp.TCPConnector(ssl=client_ssl_context(self.pki.ca_cert, cert, key))
            self._sessions[sae] = aiohttp.ClientSession(self.url, headers=headers, connector=connector)
        return self._sessions[sae]

    async def call(self, sae: str | None, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session(sae).request(method, path, **kwargs) as response:
            text = await response.text()
            try:
                import json
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

    async def register(self, sae: str, email: str | None = None, pool: int = 50) -> None:
        caller = sae if self.tls else None  # under TLS every connection needs a certificate
        status, body = await self.call(caller, "POST", f"{API}/register", json={
            "sae_id": sae, "user_email": email or f"{sae.lower()}@example.com",
            "initial_pool_size": pool})
        assert status == 201, body

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        if self.served is not None:
            await self.served.stop()
        await self.system.stop_all()


@contextlib.asynccontextmanager
async def served(tmp: Path, saes: tuple[str, ...] = (), **options: Any) -> AsyncIterator[Node]:
    """A Node started with ``options`` (``tls``, or NodeConfig values), closed afterwards."""
    node = await Node(tmp, **options).start(saes)
    try:
        yield node
    finally:
        await node.close()


async def stored_rows(store: KeyStore | None, sql: str, *parameters: Any) -> list[Any]:
    """Rows of a white-box query on a store (tests only)."""
    assert store is not None
    return await store.read(lambda db: db.execute(sql, parameters).fetchall())


async def store_audit(store: KeyStore | None) -> dict[str, int]:
    assert store is not None
    return await store.read(audit.audit)


async def pool_status(store: KeyStore | None, sae: str) -> Any:
    assert store is not None
    return await store.read(pools.status(sae))


def decoded(keys: list[dict[str, str]]) -> dict[str, bytes]:
    return {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in keys}
