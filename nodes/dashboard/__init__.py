"""The dashboard room: a live view of a served network, and fault injection from a page and a
JSON control API, on a port of its own (``--serve --dashboard [HOST:]PORT``). It sits on top of
the run room.

Its public surface is ``__all__``.
"""

from nodes.dashboard.app import Dashboard
from nodes.dashboard.live import LiveView
from nodes.dashboard.serving import AddressError, parse_address, serve_with_dashboard

__all__ = ["AddressError", "Dashboard", "LiveView", "parse_address", "serve_with_dashboard"]
