"""The bodies of the HTTP surface: JSON that ends with a newline, keys as ETSI Key containers,
times as ISO 8601 UTC."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from nodes.keynode import Key


def json_reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response whose body ends with a newline (a terminal shows the next prompt on a
    line of its own after curl)."""
    return web.json_response(data, status=status, dumps=_json_line)


def _json_line(data: Any) -> str:
    return json.dumps(data) + "\n"


def keys_body(keys: list[Key]) -> dict[str, Any]:
    return {"keys": [{"key_ID": k.key_id, "key": base64.b64encode(k.material).decode("ascii")}
                     for k in keys]}


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
