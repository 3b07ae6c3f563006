"""The testing room: a simulated QKD network inside another project's tests. A pytest plugin
(``qkd_network``, registered through the ``pytest11`` entry point) serves a scenario on free
loopback ports for a test, hands it the URLs, starts and ends outages now, and fails the test
when the network breaks an invariant. It sits on top of the run room.

Its public surface is ``__all__``.
"""

from nodes.testing.network import NetworkError, QKDNetwork

__all__ = ["NetworkError", "QKDNetwork"]
