"""The three ETSI GS QKD 014 key requests of an LKM, each one object: its checks, its store
transaction, its reply; and one table, :data:`REFUSAL_ORDER`, of which refusal comes first.

A request is refused by the first rule of its row in the table that does not hold. A rule is
checked by the node (``check_<key>`` of the request, on what the LKM holds in memory) or inside
the store's transaction (the store's own checks, in the same order). :func:`plan` runs the node
checks that come before the first store rule before the store is touched, and the ones after
it once the transaction has answered (only for a request that changes nothing, so nothing has
to be undone). ``tests/test_etsi_requests.py`` holds every row to what the LKM answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, Protocol

from nodes.keynode.config import NodeConfig
from nodes.keynode.copies import Handed
from nodes.keynode.directory import Directory
from nodes.keynode.errors import (
    BadRequest,
    ExtensionMandatoryUnmet,
    ExtensionMandatoryUnsupported,
    InsufficientKeys,
    KeysNotFound,
    NotFound,
    QKDError,
    SizeNotMultipleOf8,
    TooManyRequests,
    Unauthorized,
)
from nodes.keynode.messages import GetKeys, GetKeysWithIds, GetStatus
from nodes.keynode.naming import pool_node
from nodes.keynode.quota import SenderBuckets
from nodes.keynode.store import Key, KeyStore, PoolStatus, Txn, delivery, pools
from nodes.keynode.views import status_view

SUPPORTED_EXTENSIONS = frozenset({"target_user_id"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """One rule a request must meet: ``key`` names its check, ``rule`` says it in words."""

    key: str
    rule: str
    error: type[QKDError]
    where: str  # "node" (check_<key> of the request) or "store" (in the transaction)

    @property
    def status(self) -> int:
        return self.error.status


#: each request's rules, the first one broken deciding the answer
REFUSAL_ORDER: dict[type, tuple[Refusal, ...]] = {
    GetStatus: (
        # the slave first: a deleted user asking for its own status gets 404 (replay spec 25)
        Refusal("slave_pool", "the slave has a pool at this LKM", NotFound, "store"),
        Refusal("caller", "the caller is an SAE registered here", Unauthorized, "node"),
    ),
    GetKeys: (
        Refusal("caller", "the caller is an SAE registered here", Unauthorized, "node"),
        Refusal("bounds", "number, size, additional slaves and extensions are supported",
                BadRequest, "node"),
        Refusal("quota", "the caller is within its sender quota of the slave's pool",
                TooManyRequests, "node"),
        Refusal("slave_pool", "the slave has a pool at this LKM", NotFound, "store"),
        Refusal("not_self", "the slave is not the caller", BadRequest, "store"),
        Refusal("enough", "the pool holds enough key material for the whole request",
                InsufficientKeys, "store"),
    ),
    GetKeysWithIds: (
        Refusal("caller", "the caller is an SAE registered here", Unauthorized, "node"),
        Refusal("count", "at most max_key_per_request key IDs", BadRequest, "node"),
        Refusal("slave_of_keys", "the caller is the slave of every key", Unauthorized, "store"),
        Refusal("keys_held", "every key was delivered to the master and not read yet",
                KeysNotFound, "store"),  # 404 under QuMail's profile
    ),
}


class KeyNode(Protocol):
    """What a request may use of its LKM."""

    name: str
    config: NodeConfig
    directory: Directory
    quota: SenderBuckets | None

    @property
    def store(self) -> KeyStore: ...

    def now(self) -> float: ...

    def is_local(self, sae_id: str) -> bool: ...

    def observe(self, kind: str, node: str, **data: Any) -> None: ...

    def next_sync_s(self) -> float | None: ...

    def pool_changed(self, pool: PoolStatus) -> None: ...

    async def pool_drained(self, sae_id: str) -> None: ...

    async def open_slice(self, sae_id: str) -> bool: ...

    def consume_copies(self, copies: dict[str, tuple[str, ...]]) -> list[asyncio.Task[None]]: ...


class Request:
    """One ETSI request: ``transaction`` for the store, ``reply`` from its outcome (a result
    or the QKDError the store refused it with)."""

    message_type: ClassVar[type]

    def __init__(self, node: KeyNode, message: Any) -> None:
        self.node = node
        self.message = message

    def check_caller(self) -> QKDError | None:
        if self.node.is_local(self.message.caller):
            return None
        return Unauthorized(f"SAE '{self.message.caller}' is not registered at this KME")

    def transaction(self) -> Txn[Any]:
        raise NotImplementedError

    async def reply(self, outcome: Any) -> Any:
        raise NotImplementedError


class StatusRequest(Request):
    message_type = GetStatus

    def transaction(self) -> Txn[PoolStatus]:
        return pool_or_404(self.message.slave)

    async def reply(self, outcome: PoolStatus | QKDError) -> dict[str, Any]:
        if isinstance(outcome, QKDError):
            raise outcome
        target = outcome.home_lkm or self.node.config.kme_id
        return status_view(self.node.config, outcome, self.message.caller, target,
                           self.node.next_sync_s())


class EncKeysRequest(Request):
    message_type = GetKeys

    def check_bounds(self) -> QKDError | None:
        msg, cfg = self.message, self.node.config
        size = self.size_bits
        if not 1 <= msg.number <= cfg.max_keys_per_request:
            return BadRequest(f"number must be between 1 and {cfg.max_keys_per_request}",
                              number=msg.number)
        if self.node.quota is not None and msg.number > self.node.quota.quota.burst:
            return BadRequest(f"number: at most {self.node.quota.quota.burst} keys per request "
                              "under this node's sender quota", number=msg.number)
        if size % 8:
            return SizeNotMultipleOf8(size=size)
        if not cfg.min_key_size_bits <= size <= cfg.max_key_size_bits:
            return BadRequest(f"size must be between {cfg.min_key_size_bits} and "
                              f"{cfg.max_key_size_bits} bits", size=size)
        if msg.additional_slaves:
            return BadRequest("additional_slave_SAE_IDs is not supported (max_SAE_ID_count is 0)")
        return self._extensions_refusal()

    def check_quota(self) -> QKDError | None:
        msg, node = self.message, self.node
        if node.quota is None:
            return None
        refusal = node.quota.refusal(msg.caller, msg.slave, msg.number, node.now())
        if refusal is not None:  # recorded: who was held back, from whose pool
            node.observe("quota", node.name, pool=pool_node(node.name, msg.slave),
                         master=msg.caller, slave=msg.slave, keys=msg.number)
        return refusal

    def _extensions_refusal(self) -> QKDError | None:
        msg = self.message
        unsupported = [name for name, _ in msg.extension_mandatory
                       if name not in SUPPORTED_EXTENSIONS]
        if unsupported:
            return ExtensionMandatoryUnsupported(**{
                "extension_mandatory_unsupported": f"{', '.join(unsupported)} is not supported"})
        for name, value in msg.extension_mandatory:
            if name == "target_user_id" and value != msg.slave:
                return ExtensionMandatoryUnmet(target_user_id="must equal the slave SAE ID")
        return None

    @property
    def size_bits(self) -> int:
        size: int | None = self.message.size_bits
        return self.node.config.key_size_bits if size is None else size

    def transaction(self) -> Txn[tuple[list[Key], PoolStatus]]:
        msg = self.message
        return delivery.reservation(msg.slave, msg.caller, msg.slave, msg.number,
                                    self.size_bits, self.node.now(), self.node.config.qumail)

    async def reply(self, outcome: tuple[list[Key], PoolStatus] | QKDError) -> list[Key]:
        msg, node = self.message, self.node
        if isinstance(outcome, NotFound) and await node.open_slice(msg.slave):
            [outcome] = await node.store.many([self.transaction()])  # a first request opens it
        if isinstance(outcome, InsufficientKeys):  # what a drained pool looks like
            await node.pool_drained(msg.slave)
        if isinstance(outcome, QKDError):
            raise outcome
        keys, after = outcome
        if node.quota is not None:
            node.quota.charge(msg.caller, msg.slave, len(keys), node.now())
        node.observe("delivery", node.name, pool=pool_node(node.name, msg.slave),
                     master=msg.caller, slave=msg.slave, keys=len(keys))
        node.pool_changed(after)
        return keys


class DecKeysRequest(Request):
    message_type = GetKeysWithIds

    def check_count(self) -> QKDError | None:
        limit = self.node.config.max_keys_per_request
        if len(self.message.key_ids) > limit:
            return BadRequest(f"at most {limit} key IDs per request")
        return None

    def transaction(self) -> Txn[delivery.Read]:
        msg, node = self.message, self.node
        return delivery.read_once(msg.caller, msg.master, msg.key_ids, node.now(),
                                  node.directory.home_of(msg.master), node.config.qumail)

    async def reply(self, outcome: delivery.Read | QKDError) -> list[Key]:
        msg, node = self.message, self.node
        if isinstance(outcome, KeysNotFound) and node.config.qumail:
            raise NotFound(outcome.message)  # QuMail's key manager answers 404 here
        if isinstance(outcome, QKDError):
            raise outcome
        node.observe("consumed", node.name, slave=msg.caller, master=msg.master,
                     keys=len(outcome.keys))
        return Handed(outcome.keys, node.consume_copies(outcome.copies))


REQUESTS: dict[type, type[Request]] = {
    kind.message_type: kind for kind in (StatusRequest, EncKeysRequest, DecKeysRequest)}
KEY_REQUESTS = frozenset(REQUESTS)


def pool_or_404(sae_id: str) -> Txn[PoolStatus]:
    """The pool of ``sae_id`` here; 404 if there is none."""
    status = pools.status(sae_id)

    def txn(db: Any) -> PoolStatus:
        pool = status(db)
        if pool is None:
            raise NotFound(f"SAE '{sae_id}' is not registered at this KME", sae_id=sae_id)
        return pool
    return txn


@dataclass(frozen=True, slots=True)
class Plan:
    """A request past its first node checks: its transaction, and the way to its reply."""

    transaction: Txn[Any]
    reply: Callable[[Any], Awaitable[Any]]


def plan(node: KeyNode, message: Any) -> Plan:
    """Check what the node can check before the store (raising the first refusal), and plan
    the rest in :data:`REFUSAL_ORDER`'s order."""
    before, after = _NODE_CHECKS[type(message)]
    request = REQUESTS[type(message)](node, message)
    _raise_first(request, before)
    if not after:
        return Plan(request.transaction(), request.reply)

    async def reply(outcome: Any) -> Any:
        if not isinstance(outcome, QKDError):
            _raise_first(request, after)
        return await request.reply(outcome)
    return Plan(request.transaction(), reply)


def _raise_first(request: Request, checks: tuple[str, ...]) -> None:
    for check in checks:
        refusal = getattr(request, check)()
        if refusal is not None:
            raise refusal


def _node_checks(rules: tuple[Refusal, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of a request's node checks before its first store rule, and after it."""
    first_store = next(i for i, rule in enumerate(rules) if rule.where == "store")
    names = [f"check_{rule.key}" if rule.where == "node" else "" for rule in rules]
    return (tuple(n for n in names[:first_store] if n),
            tuple(n for n in names[first_store:] if n))


#: REFUSAL_ORDER's node checks, split once: message type -> (before the store, after it)
_NODE_CHECKS = {kind: _node_checks(rules) for kind, rules in REFUSAL_ORDER.items()}


def _check_table() -> None:
    """Every node rule has its check; a node rule after a store rule only in a request that
    changes nothing (status), since a refusal after the transaction cannot undo it."""
    for message_type, rules in REFUSAL_ORDER.items():
        kind = REQUESTS[message_type]
        seen_store = False
        for rule in rules:
            if rule.where == "node":
                assert hasattr(kind, f"check_{rule.key}"), (kind, rule.key)
                assert not seen_store or message_type is GetStatus, (kind, rule.key)
            seen_store = seen_store or rule.where == "store"


_check_table()
