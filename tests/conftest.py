from __future__ import annotations

import os
import sys
import threading
from typing import AsyncIterator

import pytest

from tests.support import Node, served

# every simulation in the tests (and the CLI runs they start) runs the engine's debug checks
os.environ.setdefault("QKDSIM_DEBUG", "1")

SAES = ("SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001", "SAE_EVE_001")
#: how long threads still running after the last test get to end on their own
STRAY_GRACE_S = 15.0
#: idle workers of thread pools (asyncio's default executor among them): the interpreter's own
#: exit handler ends them, so they never hold it
POOL_THREADS = ("ThreadPoolExecutor-", "asyncio_")


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread left running (say, the worker of an SQLite connection a failed test never
    closed) would keep the interpreter from exiting, and CI would hang to its limit instead of
    failing. Give such threads a grace period, then name them and exit non-zero."""
    stray = [t for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon and t.is_alive()
             and not t.name.startswith(POOL_THREADS)]
    for thread in stray:
        thread.join(STRAY_GRACE_S / max(len(stray), 1))
    stray = [t for t in stray if t.is_alive()]
    if stray:
        sys.stderr.write("tests: threads still running after the last test, which would keep "
                         f"this process from exiting: {', '.join(t.name for t in stray)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(3)


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
