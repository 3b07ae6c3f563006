"""One error hierarchy for the key node.

Each leaf carries its HTTP status and its ETSI GS QKD 014 ``message``; the API middleware renders
every one of them as ``{"message": ..., "details": [...]}``. Handlers and the LKM raise, they never
build error JSON. Messages name the offending input but never contain key material.
"""

from __future__ import annotations

from typing import Any


class QKDError(Exception):
    """Base: a refused request. ``details`` is a list of name/value objects (ETSI Table 13)."""

    status = 400
    default_message = "bad request"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = [{name: value} for name, value in details.items()]
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(QKDError):
    """The caller sent something malformed or out of bounds (their fault)."""


class SizeNotMultipleOf8(BadRequest):
    default_message = "size shall be a multiple of 8"


class ExtensionMandatoryUnsupported(BadRequest):
    default_message = "not all extension_mandatory parameters are supported"


class ExtensionMandatoryUnmet(BadRequest):
    default_message = "not all extension_mandatory request options could be met"


class KeysNotFound(BadRequest):
    default_message = "one or more keys specified are not found on KME"


class AlreadyRegistered(BadRequest):
    default_message = "SAE already registered"


class Unauthorized(QKDError):
    """The caller may not do this (unknown identity, or not a slave of the keys asked for)."""

    status = 401
    default_message = "unauthorized"


class Forbidden(QKDError):
    """The caller is known, but this route is for operators (or for the SAE it names)."""

    status = 403
    default_message = "forbidden"


class TooManyRequests(QKDError):
    """The sender is over its quota of the receiver's pool; ``retry_after_s`` says when the
    request would pass (the reply's ``Retry-After``)."""

    status = 429
    default_message = "over the sender's quota"
    retry_after_s: float = 1.0


class NotFound(QKDError):
    """A route or an SAE that does not exist on this node."""

    status = 404
    default_message = "not found"


class MethodNotAllowed(QKDError):
    status = 405
    default_message = "method not allowed"


class PayloadTooLarge(QKDError):
    status = 413
    default_message = "request body too large"


class InsufficientKeys(QKDError):
    """Not enough key material to serve the whole request; nothing was handed out."""

    status = 503
    default_message = "not enough key material available"


class KMUnreachable(QKDError):
    """The next-door key manager did not answer (an outcome, not a crash)."""

    status = 503
    default_message = "key manager unreachable"


class NoLinkKey(KMUnreachable):
    """The KMs answered, but no path's QKD links held key to relay a slice over (an outcome,
    ``no_key``; the sync is retried as after ``unreachable``)."""

    default_message = "no link key to relay over"
