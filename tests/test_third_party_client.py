"""An outside opinion: nanoy42's ``etsi-qkd-014-client`` (requests, synchronous) over mutual TLS.

The client is a plain third-party ETSI GS QKD 014 consumer: it parses the 11 Status fields, sends
``get_key`` as GET when it has no arguments and as POST JSON otherwise, always POSTs
``get_key_with_key_IDs``, and parses a JSON ``message`` on every non-200 reply (an empty 401 body
would crash it). It blocks, so every call runs in a worker thread while the LKM keeps serving on
the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Callable

import pytest
from etsi_qkd_014_client import QKD014Client
from etsi_qkd_014_client.data import DataError, DataKeyContainer, DataStatus

from tests.conftest import SAES
from tests.support import API, Node

ALICE, BOB, CAROL, EVE = SAES
NOT_FOUND = "one or more keys specified are not found on KME"
POOL = 20


async def register(node: Node, sae: str, pool: int = POOL) -> None:
    # Node.register calls without a client certificate, which a TLS node refuses; use the SAE's.
    status, body = await node.call(sae, "POST", f"{API}/register", json={
        "sae_id": sae, "user_email": f"{sae.lower()}@example.com", "initial_pool_size": pool})
    assert status == 201, body


@pytest.fixture
async def kme(tls_node: Node) -> Node:
    for sae in (ALICE, BOB):
        await register(tls_node, sae)
    return tls_node


def client_for(node: Node, sae: str) -> QKD014Client:
    assert node.pki is not None and node.served is not None
    cert, key = node.pki.saes[sae]
    return QKD014Client(f"127.0.0.1:{node.served.port}", str(cert), str(key), str(node.pki.ca_cert))


async def run(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(call, *args, **kwargs)


def material(container: DataKeyContainer) -> dict[str, bytes]:
    return {k.key_id: base64.b64decode(k.key, validate=True) for k in container.keys}


async def test_the_client_parses_every_status_field(kme: Node) -> None:
    code, status = await run(client_for(kme, ALICE).get_status, BOB)
    assert code == 200 and isinstance(status, DataStatus)
    assert (status.master_sae_id, status.slave_sae_id) == (ALICE, BOB)
    assert status.source_kme_id == status.target_kme_id == kme.lkm.config.kme_id
    assert (status.key_size, status.min_key_size, status.max_key_size) == (8192, 64, 8192)
    assert (status.stored_key_count, status.max_key_count) == (POOL, POOL)
    assert (status.max_key_per_request, status.max_sae_id_count) == (100, 0)


async def test_alice_and_bob_share_keys_through_the_client_exactly_once(kme: Node) -> None:
    alice, bob = client_for(kme, ALICE), client_for(kme, BOB)

    code, big = await run(alice.get_key, BOB, number=2, size=8192)  # POST {"number": 2, ...}
    assert code == 200 and isinstance(big, DataKeyContainer), getattr(big, "message", big)
    code, small = await run(alice.get_key, BOB, size=256)  # POST {"size": 256}
    assert code == 200 and isinstance(small, DataKeyContainer), getattr(small, "message", small)
    code, default = await run(alice.get_key, BOB)  # no arguments: the simple GET form
    assert code == 200 and isinstance(default, DataKeyContainer)
    sent = {**material(big), **material(small), **material(default)}
    assert [len(v) for v in sent.values()] == [1024, 1024, 32, 1024]

    code, status = await run(alice.get_status, BOB)
    assert code == 200 and status.stored_key_count == POOL - 4  # the 256-bit key cut a whole row

    ids = list(sent)
    code, received = await run(bob.get_key_with_key_IDs, ALICE, ids)
    assert code == 200 and isinstance(received, DataKeyContainer), getattr(received, "message", "")
    assert [k.key_id for k in received.keys] == ids
    assert material(received) == sent

    code, error = await run(bob.get_key_with_key_IDs, ALICE, ids[:1])
    assert code == 400 and isinstance(error, DataError)
    assert error.message == NOT_FOUND


async def test_the_client_parses_a_401_for_an_sae_that_is_not_registered(kme: Node) -> None:
    eve = client_for(kme, EVE)
    code, container = await run(client_for(kme, ALICE).get_key, BOB, number=1)
    assert code == 200
    [key] = container.keys
    for call, args in ((eve.get_status, (BOB,)), (eve.get_key, (BOB,)),
                       (eve.get_key, (BOB, 1, 256)),
                       (eve.get_key_with_key_IDs, (ALICE, [key.key_id]))):
        code, error = await run(call, *args)
        assert code == 401 and isinstance(error, DataError)
        assert isinstance(error.message, str) and error.message
    code, received = await run(client_for(kme, BOB).get_key_with_key_IDs, ALICE, [key.key_id])
    assert code == 200 and [k.key for k in received.keys] == [key.key]  # eve consumed nothing


async def test_the_client_parses_a_401_for_a_registered_sae_not_named_as_slave(kme: Node) -> None:
    await register(kme, CAROL)
    code, container = await run(client_for(kme, ALICE).get_key, BOB, number=1)
    assert code == 200
    ids = [k.key_id for k in container.keys]
    code, error = await run(client_for(kme, CAROL).get_key_with_key_IDs, ALICE, ids)
    assert code == 401 and isinstance(error, DataError) and error.message
    code, received = await run(client_for(kme, BOB).get_key_with_key_IDs, ALICE, ids)
    assert code == 200 and material(received) == material(container)


async def test_the_client_parses_the_exact_400_messages_and_the_404(kme: Node) -> None:
    alice = client_for(kme, ALICE)
    code, error = await run(alice.get_key, BOB, size=257)
    assert code == 400 and isinstance(error, DataError)
    assert error.message == "size shall be a multiple of 8"
    code, error = await run(alice.get_key, BOB, extension_mandatory=[{"zz_unknown": 1}])
    assert code == 400 and error.message == "not all extension_mandatory parameters are supported"
    assert isinstance(error.details, list) and all(isinstance(d, dict) for d in error.details)
    code, error = await run(alice.get_key, BOB, number=1, additional_slave_sae_ids=[CAROL])
    assert code == 400 and isinstance(error, DataError)
    code, error = await run(alice.get_status, "SAE_NOBODY")
    assert code == 404 and isinstance(error, DataError) and error.message
    code, status = await run(alice.get_status, BOB)
    assert code == 200 and status.stored_key_count == POOL  # no failed call took a key
