"""ETSI error bodies for what aiohttp refuses before the application sees a request.

A request that cannot be parsed (an over-long request line or header, a malformed line, a
method token llhttp does not know) is answered by aiohttp's protocol handler, in plain text
that quotes the offending bytes back. :class:`JsonErrorRunner` serves with a handler whose
answer is an ETSI Error body instead, ``{"message", "details"}``, with aiohttp's status and the
kind of problem, and nothing of the request echoed; an over-long request line is 414 and an
over-long header 431 (aiohttp answers 400 for both).
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

#: what the parser quotes of an over-long request line: its target ("/aaa...", "http://...")
#: or the line itself ("GET /..."); of an over-long header it quotes the value
_REQUEST_LINE = re.compile(rb"^(/|[A-Za-z][A-Za-z0-9+.-]*://|[A-Z]+ )")


class JsonErrorHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it, checks nothing was sent
        if isinstance(exc, LineTooLong):  # the request line (414) or a header (431)
            line = exc.args[0] if exc.args else b""
            line = line.encode("latin-1", "replace") if isinstance(line, str) else line
            status = 414 if _REQUEST_LINE.match(line) else 431
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:  # a status http.HTTPStatus does not name
            phrase = "error"
        kind = type(exc).__name__ if exc is not None else phrase
        body = {"message": f"the request could not be handled: {phrase}",
                "details": [{"problem": kind}]}
        response = web.Response(status=status, text=json.dumps(body) + "\n",
                                content_type="application/json")
        response.force_close()
        return response


class JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests with ETSI Error bodies."""

    async def _make_server(self) -> Any:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer
        return server
