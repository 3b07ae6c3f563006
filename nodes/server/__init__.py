"""The server room: an LKM's HTTP surface (aiohttp routes, errors, identity), its metrics and
logs, TLS certificates, and serving a node on a real port.

Its public surface is ``__all__``; other rooms import only these names, from this package.
"""

from nodes.server.access import admin_notice
from nodes.server.api import caller_of, create_app
from nodes.server.observability import NodeLog, NodeMetrics, caller_for_log
from nodes.server.pki import (
                              PkiFiles,
                              client_ssl_context,
                              common_name_from_der,
                              curl_example,
                              register_example,
                              safe_file_stem,
                              server_ssl_context,
                              write_pki,
)
from nodes.server.pki_command import pki_command
from nodes.server.replies import keys_body
from nodes.server.serve import ServedNode, ServerTimeouts, serve_forever

__all__ = [
    "pki_command",
    "admin_notice", "NodeLog", "NodeMetrics", "PkiFiles", "ServedNode", "ServerTimeouts", "caller_for_log",
    "caller_of", "client_ssl_context", "common_name_from_der", "create_app", "curl_example",
    "keys_body", "register_example", "safe_file_stem", "serve_forever", "server_ssl_context", "write_pki",
]
