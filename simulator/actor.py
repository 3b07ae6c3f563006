"""Actors: one mailbox each, one message at a time (after pykka's ``Actor`` and ``ActorRef``).

An :class:`Actor` subclass implements :meth:`Actor.receive`; others talk to it only through its
:class:`ActorRef`: :meth:`ActorRef.tell` (fire and forget) or :meth:`ActorRef.ask` (a future of
the reply, or of the exception ``receive`` raised). Both put the message in the mailbox at once,
so the order of calls is the order of delivery whether or not the caller awaits. An ``ask`` may
be bounded in the clock's time (``timeout_s``); a handler may answer later with
:meth:`Actor.defer_reply` (the reply is plain data; no future ever travels in a message).

Supervision lives in :class:`~simulator.system.ActorSystem`: an exception raised while handling
a ``tell`` (or an unexpected one while handling an ``ask``) goes to :meth:`Actor.on_failure`,
whose :class:`Directive` resumes, restarts (``on_stop`` then ``on_start``) or stops the actor.

Batches: an actor that lists message types in :attr:`Actor.batchable` gets the consecutive
messages of those types waiting at the head of its mailbox in one :meth:`Actor.receive_batch`
call (one message alone still goes to ``receive``). Mailbox order is kept: a batch never
reaches past a message of another type, and its outcomes are answered in order. A batch must
not wait on the virtual clock (only its first message's lease is suspended by a sleep).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Generic, Sequence, TypeVar

from simulator.activity import Activity, Lease

if TYPE_CHECKING:
    from simulator.system import Cell

A = TypeVar("A", bound="Actor")
T = TypeVar("T")


class Directive(enum.Enum):
    RESUME = "resume"
    RESTART = "restart"
    STOP = "stop"


class ActorStopped(Exception):
    """The actor is stopped: the message was not delivered, or not answered."""


class AskTimeout(Exception):
    """No reply within the ask's ``timeout_s`` of clock time."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure of an actor, a hook or a task, as the run reports it."""

    actor: str
    message: str  # the message type, or the hook ("on_failure", "restart", "on_stop", "task")
    error: str
    directive: str  # what followed: resume | restart | stop | none


class Promise:
    """The answer to one ask: settled once, by the actor system or by the actor itself.

    ``on_settle`` hooks run synchronously when it settles, before the asker resumes: a waiter
    in clock time renews its lease there, so no moment passes uncounted."""

    __slots__ = ("future", "_hooks")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self._hooks: list[Callable[[], None]] | None = None

    def done(self) -> bool:
        return self.future.done()

    def on_settle(self, hook: Callable[[], None]) -> None:
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self._settled()
            self.future.set_result(value)

    def reject(self, error: BaseException) -> None:
        if not self.future.done():
            self._settled()
            self.future.set_exception(error)

    def _settled(self) -> None:
        hooks, self._hooks = self._hooks, None
        for hook in hooks or ():
            hook()


class Envelope(Lease):
    """A message in a mailbox, and the unit of work it counts for until it is handled."""

    __slots__ = ("message", "reply", "to")

    def __init__(self, activity: Activity, to: str, message: object,
                 reply: Promise | None) -> None:
        self.to = to
        self.message = message
        self.reply = reply
        self._activity = activity  # Lease.__init__, inlined: this runs for every message
        self.held = True
        self.waiting = False
        activity._begin(self)

    def describe(self) -> str:
        return f"{self.to} <- {type(self.message).__name__}"

    def origin(self) -> str:
        return self.to


class Actor:
    """Base class. Subclasses set ``name`` (via the constructor) and implement ``receive``."""

    #: exceptions that are ordinary answers to an ``ask`` rather than failures of the actor
    expected_errors: tuple[type[BaseException], ...] = ()
    #: message types that may be handed to :meth:`receive_batch` several at a time
    batchable: frozenset[type] = frozenset()
    #: the most messages one batch takes
    max_batch: int = 64

    def __init__(self, name: str) -> None:
        self.name = name
        self.ref: ActorRef[Any] = _UNBOUND
        self._cell: Cell | None = None

    def start_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run work that must not block this actor's mailbox (awaiting other actors, say).

        The task is counted work until it ends, is cancelled when the actor stops, and its
        result should come back as a message (pipe-to-self), never by touching actor state.
        """
        assert self._cell is not None, "start_task before spawn"
        return self._cell.system.start_task(self.name, coro)

    def defer_reply(self) -> Promise | None:
        """Answer the ask being handled later: the system will not reply when ``receive``
        returns; resolve the promise instead (the system rejects it if the actor stops first).
        None when the message was told, not asked."""
        assert self._cell is not None, "defer_reply outside a handler"
        return self._cell.defer_reply()

    async def on_start(self) -> None:
        """Called before the first message, and again after a restart."""

    async def on_stop(self) -> None:
        """Called once the actor stops (and before a restart)."""

    async def on_failure(self, message: object, error: BaseException) -> Directive:
        """Decide what happens after ``receive`` raised while handling a tell."""
        return Directive.RESUME

    async def receive(self, message: object) -> Any:
        raise NotImplementedError

    async def receive_batch(self, messages: Sequence[object]) -> list[Any]:
        """Handle several queued messages of the :attr:`batchable` types at once; return one
        outcome per message, in order: its reply, or the :class:`Exception` that answers it
        (routed as if ``receive`` had raised it). Raising fails every message of the batch."""
        raise NotImplementedError


class ActorRef(Generic[A]):
    """The only handle other code holds on an actor."""

    __slots__ = ("_cell", "name")

    def __init__(self, cell: Cell, name: str) -> None:
        self._cell = cell
        self.name = name

    def tell(self, message: object) -> None:
        self._cell.put(message, None)

    def ask(self, message: object, timeout_s: float | None = None) -> Awaitable[Any]:
        """The message is in the mailbox when this returns; await the result for the reply.
        With ``timeout_s``, the wait is bounded in the clock's time (AskTimeout), and under the
        virtual clock the caller's work counts as waiting, not running, meanwhile."""
        promise = Promise(asyncio.get_running_loop().create_future())
        self._cell.put(message, promise)
        if timeout_s is None:
            return promise.future
        return self._cell.system.wait_in_clock_time(promise, timeout_s, self.name)

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"


_UNBOUND: ActorRef[Any] = ActorRef.__new__(ActorRef)
