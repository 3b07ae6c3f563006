"""The pytest plugin (entry point ``pytest11``: installing qkdsim makes it available).

    def test_my_client(qkd_network):
        net = qkd_network("scenarios/quickstart.yaml")      # a path, or a scenario as a dict
        url = net.url_of("SAE_ALICE_001")                     # the LKM of an SAE
        # qkd_network(..., tls=True): https URLs, net.ca_cert, net.certs[sae] = (cert, key)
        ...                                                   # the client under test, on url
        outage = net.start_outage("down", "KM1")              # now; net.end_outage(outage)
        summary = net.stop().summary                          # optional: teardown stops it

Every network a test started is stopped at teardown, even when the test failed, and its
invariants are checked then: a key ID delivered twice, or keys that differed between sender
and receiver, fail the test with the figure. Results go to a temporary folder per network
(``net.out_dir``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:  # imported when a test asks for a network: pytest starts as fast as before
    from nodes.testing.network import QKDNetwork


@pytest.fixture
def qkd_network(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[..., QKDNetwork]]:
    """A factory: ``qkd_network(scenario, duration=None, tls=False)`` serves the scenario (a
    YAML path or a dict) on free loopback ports and returns its :class:`QKDNetwork` once it
    is ready; with ``tls``, over mutual TLS, with ``ca_cert`` and ``certs[sae]`` for clients."""
    from nodes.testing.network import QKDNetwork

    started: list[QKDNetwork] = []

    def start(scenario: str | Path | Mapping[str, Any], duration: str | None = None,
              tls: bool = False) -> QKDNetwork:
        network = QKDNetwork(scenario, tmp_path_factory.mktemp("qkd-network"), duration, tls)
        started.append(network)
        return network.start()

    yield start
    problems: list[str] = []
    for network in started:
        try:
            problems += network.breaches()
        except Exception as error:  # noqa: BLE001 - every network is stopped, then reported
            problems.append(f"{network.scenario.name}: {error}")
    if problems:
        pytest.fail("a simulated QKD network broke an invariant:\n" + "\n".join(problems),
                    pytrace=False)
