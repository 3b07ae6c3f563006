"""Simulated users (SAEs): mail traffic through the real ETSI 014 API of their home LKM.

A sender's mails arrive as a Poisson process per traffic flow. For each mail it takes
``ceil(mail_bytes / key_bytes)`` keys from the receiver's pool with enc_keys, then tells the
receiver the key IDs and a digest of the key bytes. The receiver reads the keys with dec_keys
at its own home LKM and checks the digest, so a run proves that both ends saw identical key
material. Key material never leaves these two exchanges: events carry counts and reasons only.

An SAE reaches its LKM through a :class:`Transport`: :class:`HttpTransport` (the default) sends
real HTTP requests to the same aiohttp application external clients use; :class:`DirectTransport`
(the scenario's ``transport: direct``) asks the LKM actor the same ETSI messages the handlers would
and renders the reply with the handlers' own body function, which skips the HTTP stack but
leaves the LKM, its store and every outcome as they are.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

import aiohttp

from nodes.keynode import GetKeys, GetKeysWithIds, QKDError
from nodes.server import keys_body
from nodes.traffic.trace import SIMULATED_HEADER
from simulator import Actor, ActorRef, ActorStopped, Clock, Stream, tell_later

API = "/api/v1/keys"


@dataclass(frozen=True, slots=True)
class Flow:
    to_sae: str
    mails_per_hour: float
    mail_bytes: int


@dataclass(frozen=True, slots=True)
class SendMail:
    to_sae: str
    mail_bytes: int


@dataclass(frozen=True, slots=True)
class MailArrived:
    """A mail's keys for its receiver to read. A retry carries the digests of the keys already
    read (``read``) and reads only the rest; ``discard``: the sender could not take every key
    the mail needed, so the receiver reads the ones it took only to spend them."""

    from_sae: str
    key_ids: tuple[str, ...]
    digest: str
    attempt: int = 0
    read: tuple[str, ...] = ()
    discard: bool = False


READ_RETRY_S = 600.0  # a receiver whose LKM is unreachable tries again ten minutes later
READ_ATTEMPTS = 36  # six hours


@dataclass
class MailAudit:
    """What the SAEs saw, for the run's expectations (no key material is kept)."""

    delivered_ids: Counter[str] = field(default_factory=Counter)
    mails_sent: int = 0
    mails_received: int = 0
    mismatched_keys: int = 0
    released_keys: int = 0  # taken by a send that failed halfway, then read by the receiver

    @property
    def reused_key_ids(self) -> int:
        return sum(1 for count in self.delivered_ids.values() if count > 1)

    def as_dict(self) -> dict[str, int]:
        return {"reused_key_ids": self.reused_key_ids, "mismatched_keys": self.mismatched_keys,
                "mails_sent": self.mails_sent, "mails_received": self.mails_received,
                "released_keys": self.released_keys}


Record = Callable[..., None]
Reply = tuple[int, Any]  # (HTTP status, JSON body); status 0: the LKM could not be reached
UNREACHABLE = "connection failed"  # the message of a status-0 reply, either transport


class Transport(Protocol):
    async def enc_keys(self, caller: str, slave: str, number: int, size_bits: int) -> Reply: ...

    async def dec_keys(self, caller: str, master: str, key_ids: tuple[str, ...]) -> Reply: ...


class HttpTransport:
    """ETSI 014 over HTTP to the LKM's served aiohttp site (identity by ``X-SAE-ID``)."""

    def __init__(self, session: aiohttp.ClientSession, home_url: str) -> None:
        self.session = session
        self.home_url = home_url

    async def enc_keys(self, caller: str, slave: str, number: int, size_bits: int) -> Reply:
        return await self._post(caller, f"{API}/{slave}/enc_keys",
                                {"number": number, "size": size_bits})

    async def dec_keys(self, caller: str, master: str, key_ids: tuple[str, ...]) -> Reply:
        return await self._post(caller, f"{API}/{master}/dec_keys",
                                {"key_IDs": [{"key_ID": k} for k in key_ids]})

    async def _post(self, caller: str, path: str, body: dict[str, Any]) -> Reply:
        try:
            async with self.session.post(self.home_url + path, json=body,
                                         headers={"X-SAE-ID": caller,
                                                  SIMULATED_HEADER: "sae"}) as response:
                return response.status, await response.json(content_type=None)
        except aiohttp.ClientError:
            return 0, {"message": UNREACHABLE}
        except ValueError:
            return 0, {"message": "reply is not JSON"}


class DirectTransport:
    """The same ETSI messages, asked of the LKM actor without HTTP. ``home`` returns the LKM's
    current actor, or None while it is down (a crashed LKM is unreachable, as over HTTP)."""

    def __init__(self, home: Callable[[], ActorRef[Any] | None]) -> None:
        self.home = home

    async def enc_keys(self, caller: str, slave: str, number: int, size_bits: int) -> Reply:
        return await self._ask(GetKeys(caller, slave, number=number, size_bits=size_bits))

    async def dec_keys(self, caller: str, master: str, key_ids: tuple[str, ...]) -> Reply:
        return await self._ask(GetKeysWithIds(caller, master, key_ids))

    async def _ask(self, message: object) -> Reply:
        ref = self.home()
        if ref is None:
            return 0, {"message": UNREACHABLE}
        try:
            return 200, keys_body(await ref.ask(message))
        except QKDError as error:
            return error.status, error.body()
        except ActorStopped:
            return 0, {"message": UNREACHABLE}



class SimulatedSAE(Actor):
    """A user: sends its ``flows`` of mail (from its start on) to ``peers`` and reads what they
    send it. ``peers`` maps SAE IDs to their actors (filled by the builder as they spawn)."""

    def __init__(self, sae_id: str, transport: Transport, clock: Clock,
                 streams: Callable[[str], Stream], record: Record, audit: MailAudit,
                 key_size_bits: int, max_keys_per_request: int,
                 peers: Mapping[str, ActorRef[Any]], flows: Sequence[Flow] = (),
                 mail_delay_s: float = 0.0) -> None:
        super().__init__(sae_id)
        self.transport = transport
        self.clock = clock
        self.streams = streams
        self.record = record
        self.audit = audit
        self.key_size_bits = key_size_bits
        self.max_keys_per_request = max_keys_per_request
        self.peers = peers
        self.flows = tuple(flows)
        self.mail_delay_s = mail_delay_s
        self._flowing = False

    async def on_start(self) -> None:
        if not self._flowing:  # a restart keeps the flows' timers running
            self._flowing = True
            for index, flow in enumerate(self.flows):
                self._start_flow(flow, self.streams(flow_stream_name(self.name, index, flow)))

    def _start_flow(self, flow: Flow, stream: Stream) -> None:
        """Schedule this flow's next mail, and the one after it, for ever, with gaps drawn
        from the flow's own stream (another flow's mails never shift this one's)."""
        rate_per_s = flow.mails_per_hour / 3600.0

        def arrive() -> None:
            self.ref.tell(SendMail(flow.to_sae, flow.mail_bytes))
            self.clock.call_later(stream.expovariate(rate_per_s), arrive)

        self.clock.call_later(stream.expovariate(rate_per_s), arrive)

    async def receive(self, message: object) -> None:
        if isinstance(message, SendMail):
            await self._send(message)
        elif isinstance(message, MailArrived):
            await self._read(message)
        else:
            raise TypeError(f"unexpected message {type(message).__name__}")

    async def _send(self, mail: SendMail) -> None:
        """Take the mail's keys (in requests of at most max_keys_per_request) and tell the
        receiver. A refusal after some were taken hands those to the receiver to spend."""
        needed = max(1, math.ceil(mail.mail_bytes * 8 / self.key_size_bits))
        ids: list[str] = []
        digests: list[str] = []
        while len(ids) < needed:
            number = min(needed - len(ids), self.max_keys_per_request)
            status, body = await self.transport.enc_keys(self.name, mail.to_sae, number,
                                                         self.key_size_bits)
            if status != 200:
                self.record("failure", self.name, to=mail.to_sae, reason=_reason(status, body))
                if ids:
                    self.audit.delivered_ids.update(ids)
                    self._post(mail.to_sae, MailArrived(self.name, tuple(ids),
                                                        mail_digest(digests), discard=True))
                return
            for key in body["keys"]:
                ids.append(key["key_ID"])
                digests.append(key_digest(key["key"]))
        self.audit.delivered_ids.update(ids)
        self.audit.mails_sent += 1
        self._post(mail.to_sae, MailArrived(self.name, tuple(ids), mail_digest(digests)))

    def _post(self, to_sae: str, mail: MailArrived) -> None:
        """The mail reaches its receiver ``mail_delay_s`` later (at once when 0)."""
        peer = self.peers[to_sae]
        if self.mail_delay_s > 0:  # the receiver may be in another region of the run
            tell_later(self.clock, self.mail_delay_s, peer, mail)
        else:
            peer.tell(mail)

    async def _read(self, mail: MailArrived) -> None:
        """Read the keys not read yet, a request at a time; an unreachable LKM (or one out of
        key material) is tried again later, from where this attempt stopped."""
        read = list(mail.read)
        while len(read) < len(mail.key_ids):
            chunk = mail.key_ids[len(read):len(read) + self.max_keys_per_request]
            status, body = await self.transport.dec_keys(self.name, mail.from_sae, chunk)
            if status in (0, 503) and mail.attempt + 1 < READ_ATTEMPTS:
                retry = replace(mail, attempt=mail.attempt + 1, read=tuple(read))
                self.clock.call_later(READ_RETRY_S, lambda: self.ref.tell(retry))
                return
            if status != 200:
                if not mail.discard:
                    self.audit.mismatched_keys += len(mail.key_ids)
                self.record("receive_failure", self.name, sender=mail.from_sae,
                            reason=_reason(status, body))
                return
            by_id = {key["key_ID"]: key["key"] for key in body["keys"]}
            read += [key_digest(by_id.get(key_id, "")) for key_id in chunk]
        if mail_digest(read) != mail.digest:
            self.audit.mismatched_keys += len(mail.key_ids)
            self.record("receive_failure", self.name, sender=mail.from_sae, reason="mismatch")
        elif mail.discard:
            self.audit.released_keys += len(mail.key_ids)
        else:
            self.audit.mails_received += 1


def flow_stream_name(sae_id: str, index: int, flow: Flow) -> str:
    """The name of the stream a sender's ``index``-th flow draws its gaps from."""
    return f"flow:{sae_id}:{index}:{flow.to_sae}"


def key_digest(key_b64: str) -> str:
    """What a mail carries of a key: a hash of it (never the key)."""
    return hashlib.sha256(key_b64.encode("ascii")).hexdigest()


def mail_digest(key_digests: Sequence[str]) -> str:
    return hashlib.sha256("".join(key_digests).encode("ascii")).hexdigest()


def _reason(status: int, body: Any) -> str:
    if status == 503:
        return "no_keys"
    return f"http_{status}" if status else f"unreachable:{body.get('message', '')}"
