"""Who may do what at an LKM: operators, an SAE on its own behalf, and any registered SAE.

The ETSI routes (status, enc_keys, dec_keys) and ``mark_consumed`` are for SAEs, and the LKM
decides which SAE may read which key. The routes that change or reveal pools are for
operators (``docs/architecture.md``, "Who may do what", has the table):

============================  ==========  =======================  ==============  ============
route                         operator    the SAE it names         another SAE     no identity
============================  ==========  =======================  ==============  ============
POST register                 yes         yes (registers itself)   403             401
DELETE {sae}                  yes         yes (deletes itself)     403             401
POST {sae}/refill             yes         403                      403             401
POST km/sync, GET km/status   yes         --                       403             401
GET pools (with e-mails)      yes         --                       403             401
GET /metrics                  yes         --                       403             401
============================  ==========  =======================  ==============  ============

An operator is a client certificate whose CN is in ``operators`` (``ADMIN_SAE_IDS``) under
mutual TLS, or a caller presenting ``Authorization: Bearer <ADMIN_TOKEN>``. A wrong token is
401. Over plain HTTP an ``X-SAE-ID`` header is a claim, not a proof, so it never makes anyone
an operator. The seed left these routes open; that stays only where it is harmless, and is said
at start-up (:func:`admin_notice`): a node on loopback, over plain HTTP, with no operator
configured, treats every caller as an operator (:attr:`NodeConfig.open_admin`).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from nodes.keynode import Forbidden, NodeConfig, Unauthorized
from nodes.server.pki import common_name_from_der

#: the node's configuration, on every LKM application (the API's and /metrics' handlers read it)
CONFIG = web.AppKey("config", NodeConfig)


def admit(request: web.Request, config: NodeConfig) -> bool:
    """True for an operator; False for a caller with an identity, who may still act on its
    own behalf; 401 for anyone else. For routes whose owner is known only from the body."""
    if is_operator(request, config):
        return True
    if identity(request) is None:
        require_operator(request, config)
    return False


def require_operator(request: web.Request, config: NodeConfig, owner: str | None = None) -> None:
    """Let an operator through, or, when ``owner`` is given, the SAE of that ID; refuse
    everyone else: 401 without an identity (or with a wrong token), 403 with one."""
    if is_operator(request, config):
        return
    caller = identity(request)
    if caller is None:
        raise Unauthorized("this route needs an operator: a client certificate named in "
                           "ADMIN_SAE_IDS, or Authorization: Bearer <ADMIN_TOKEN>")
    if owner is not None and caller == owner:
        return
    what = "another SAE's" if owner is not None else "this"
    raise Forbidden(f"only an operator may use {what} route here", sae_id=caller)


def is_operator(request: web.Request, config: NodeConfig) -> bool:
    """Whether the caller is an operator (everyone is, on an open node; see the module)."""
    if config.open_admin:
        return True
    token = bearer_token(request)
    if token is not None:
        if config.admin_token is not None and hmac.compare_digest(
                token.encode("utf-8", "replace"), config.admin_token.encode("utf-8")):
            return True
        raise Unauthorized("the operator token is not valid")
    return _certificate_name(request) in config.operators


def identity(request: web.Request) -> str | None:
    """Who the caller says it is: the certificate's CN under TLS, else ``X-SAE-ID``."""
    if request.get_extra_info("ssl_object") is not None:
        return _certificate_name(request)
    return request.headers.get("X-SAE-ID") or None


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _certificate_name(request: web.Request) -> str | None:
    ssl_object = request.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return common_name_from_der(der) if der else None


def admin_notice(config: NodeConfig) -> str:
    """The start-up line on who may use the admin routes (never the token itself)."""
    if config.open_admin:
        return ("admin routes (register others, delete, refill, km/*, pools) are OPEN to every "
                "caller: loopback over plain HTTP with no operator configured; set ADMIN_TOKEN "
                "or ADMIN_SAE_IDS to restrict them")
    who = [f"certificates {', '.join(config.operators)}"] if config.operators else []
    if config.admin_token:
        who.append("the bearer token in ADMIN_TOKEN")
    if not who:
        return ("admin routes are closed: no operator is configured (ADMIN_TOKEN or "
                "ADMIN_SAE_IDS); SAEs may register and delete themselves only")
    return f"admin routes are for operators: {' and '.join(who)}"
