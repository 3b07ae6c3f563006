from __future__ import annotations

import os
from typing import AsyncIterator

import pytest

from tests.support import Node, served

# every simulation in the tests (and the CLI runs they start) runs the engine's debug checks
os.environ.setdefault("QKDSIM_DEBUG", "1")

SAES = ("SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001", "SAE_EVE_001")


@pytest.fixture
async def node(tmp_path) -> AsyncIterator[Node]:
    """An LKM served over plain HTTP on 127.0.0.1 (the seed's mode: X-SAE-ID identifies)."""
    async with served(tmp_path) as node:
        yield node


@pytest.fixture
async def tls_node(tmp_path) -> AsyncIterator[Node]:
    """An LKM served over mutual TLS on 127.0.0.1; certificates for SAES."""
    async with served(tmp_path, SAES, tls=True) as node:
        yield node
