"""Actors: one mailbox each, one message at a time.

An :class:`Actor` subclass implements :meth:`Actor.receive`; others talk to it only through its
:class:`ActorRef`, with :meth:`ActorRef.tell` (fire and forget) or :meth:`ActorRef.ask` (await the
reply, or the exception ``receive`` raised). Every queued or running message counts as work in
flight on the shared :class:`~simulator.clock.Activity`, which is what lets the virtual clock know
when the whole system is idle.

Supervision: an exception raised while handling a ``tell`` is a failure of the actor. It is passed
to :meth:`Actor.on_failure`, whose :class:`Directive` decides whether the actor resumes, restarts
(``on_stop`` then ``on_start``) or stops. Failures are kept in :attr:`ActorSystem.failures` so a run
can report them and exit non-zero. An exception raised while handling an ``ask`` is the caller's
answer and does not count as a failure unless it is not a :class:`Reply`-able error
(see :attr:`Actor.expected_errors`).

Batches: an actor that lists message types in :attr:`Actor.batchable` gets the consecutive
messages of those types waiting at the head of its mailbox in one :meth:`Actor.receive_batch`
call (one message alone still goes to ``receive``). Mailbox order is kept: a batch never
reaches past a message of another type, and its outcomes are answered in order.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Generic, Sequence, TypeVar

from simulator.clock import Activity

A = TypeVar("A", bound="Actor")
T = TypeVar("T")


SYSTEM = "<system>"  # owner of the system's own background tasks


class Directive(enum.Enum):
    RESUME = "resume"
    RESTART = "restart"
    STOP = "stop"


class ActorStopped(Exception):
    """The actor is stopped: the message was not delivered."""


@dataclass(frozen=True, slots=True)
class Failure:
    actor: str
    message: str
    error: str
    directive: str


@dataclass(slots=True)
class _Envelope:
    message: object
    reply: asyncio.Future[Any] | None


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
        self._system: ActorSystem | None = None

    def start_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run work that must not block this actor's mailbox (awaiting other actors, say).

        The task counts as activity until it ends, is cancelled when the actor stops, and its
        result should come back as a message (pipe-to-self), never by touching actor state.
        """
        assert self._system is not None, "start_task before spawn"
        return self._system.start_task(self.name, coro)

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

    def __init__(self, mailbox: "Mailbox", name: str) -> None:
        self._mailbox = mailbox
        self.name = name

    def tell(self, message: object) -> None:
        self._mailbox.put(_Envelope(message, None))

    async def ask(self, message: object, timeout_s: float | None = None) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._mailbox.put(_Envelope(message, reply))
        if timeout_s is None:
            return await reply
        return await asyncio.wait_for(reply, timeout_s)

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"


class Mailbox:
    """A FIFO of envelopes whose length counts as work in flight."""

    def __init__(self, activity: Activity) -> None:
        self._activity = activity
        self._queue: deque[_Envelope] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, envelope: _Envelope) -> None:
        if self.closed:
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped("actor is stopped"))
            return
        self._activity.begin()
        self._queue.append(envelope)
        self._ready.set()

    async def get(self) -> _Envelope:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def take_while(self, wanted: Callable[[_Envelope], bool], limit: int) -> list[_Envelope]:
        """Up to ``limit`` more envelopes from the head, as long as each is ``wanted``."""
        taken: list[_Envelope] = []
        while self._queue and len(taken) < limit and wanted(self._queue[0]):
            taken.append(self._queue.popleft())
        return taken

    def done(self) -> None:
        self._activity.end()

    def close(self) -> list[_Envelope]:
        self.closed = True
        left = list(self._queue)
        self._queue.clear()
        for _ in left:
            self._activity.end()
        return left

    def __len__(self) -> int:
        return len(self._queue)


_UNBOUND: ActorRef[Any] = ActorRef.__new__(ActorRef)


class ActorSystem:
    """Owns the actors of one run: spawns them, records their failures, stops them."""

    def __init__(self, activity: Activity | None = None) -> None:
        self.activity = activity or Activity()
        self.failures: list[Failure] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        self._actors: dict[str, Actor] = {}
        self._side_tasks: dict[str, set[asyncio.Task[Any]]] = {}

    def start_task(self, owner: str, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        self.activity.begin()
        task = asyncio.ensure_future(coro)
        tasks = self._side_tasks.setdefault(owner, set())
        tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            tasks.discard(finished)
            self.activity.end()
            if not finished.cancelled() and finished.exception() is not None:
                error = finished.exception()
                self.failures.append(Failure(owner, "task", f"{type(error).__name__}: {error}",
                                             Directive.RESUME.value))

        task.add_done_callback(done)
        return task

    async def spawn(self, actor: A) -> ActorRef[A]:
        if actor.name in self._actors:
            raise ValueError(f"an actor named {actor.name!r} exists already")
        mailbox = Mailbox(self.activity)
        ref: ActorRef[A] = ActorRef(mailbox, actor.name)
        actor.ref = ref
        actor._system = self
        await actor.on_start()
        self._actors[actor.name] = actor
        self._mailboxes[actor.name] = mailbox
        self._tasks[actor.name] = asyncio.create_task(self._run(actor, mailbox), name=actor.name)
        return ref

    def actor(self, name: str) -> Actor:
        return self._actors[name]

    async def stop(self, name: str) -> None:
        """Stop one actor: it finishes its current message, queued ones are refused."""
        mailbox = self._mailboxes.pop(name)
        for envelope in mailbox.close():
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(f"{name} stopped"))
        task = self._tasks.pop(name)
        side = self._side_tasks.pop(name, set())
        for pending in (task, *side):
            pending.cancel()
        await asyncio.gather(task, *side, return_exceptions=True)
        await self._actors.pop(name).on_stop()

    async def stop_all(self) -> None:
        """Stop every actor, then cancel the system's own background tasks."""
        for name in list(reversed(self._actors)):
            await self.stop(name)
        left = [task for tasks in self._side_tasks.values() for task in tasks]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _run(self, actor: Actor, mailbox: Mailbox) -> None:
        def batchable(envelope: _Envelope) -> bool:
            return type(envelope.message) in actor.batchable

        while True:
            batch = [await mailbox.get()]
            if batchable(batch[0]):
                batch += mailbox.take_while(batchable, actor.max_batch - 1)
            try:
                if len(batch) == 1:
                    await self._handle(actor, batch[0])
                else:
                    await self._handle_batch(actor, batch)
            finally:
                for _ in batch:
                    mailbox.done()

    async def _handle(self, actor: Actor, envelope: _Envelope) -> None:
        try:
            result = await actor.receive(envelope.message)
        except asyncio.CancelledError:
            _refuse([envelope], ActorStopped(f"{actor.name} stopped"))
            raise
        except Exception as error:  # noqa: BLE001 - every failure is routed, never swallowed
            await self._fail(actor, envelope, error)
            return
        if envelope.reply is not None and not envelope.reply.done():
            envelope.reply.set_result(result)

    async def _handle_batch(self, actor: Actor, batch: list[_Envelope]) -> None:
        try:
            outcomes = await actor.receive_batch([envelope.message for envelope in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"receive_batch answered {len(outcomes)} of {len(batch)}")
        except asyncio.CancelledError:
            _refuse(batch, ActorStopped(f"{actor.name} stopped"))
            raise
        except Exception as error:  # noqa: BLE001 - the whole batch failed: one failure
            _refuse(batch, error)
            await self._supervise(actor, batch[0].message, error)
            return
        for envelope, outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                await self._fail(actor, envelope, outcome)
            elif envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_result(outcome)

    async def _fail(self, actor: Actor, envelope: _Envelope, error: Exception) -> None:
        """``error`` is the answer to an ask; a failed tell or an unexpected error is also a
        failure of the actor, for its supervisor."""
        _refuse([envelope], error)
        if envelope.reply is None or not isinstance(error, actor.expected_errors):
            await self._supervise(actor, envelope.message, error)

    async def _supervise(self, actor: Actor, message: object, error: BaseException) -> None:
        directive = await actor.on_failure(message, error)
        self.failures.append(
            Failure(actor.name, type(message).__name__, f"{type(error).__name__}: {error}",
                    directive.value)
        )
        if directive is Directive.RESTART:
            await actor.on_stop()
            await actor.on_start()
        elif directive is Directive.STOP:  # from outside the actor's own task, which stop ends
            self.start_task(SYSTEM, self.stop(actor.name))


def _refuse(envelopes: Sequence[_Envelope], error: BaseException) -> None:
    for envelope in envelopes:
        if envelope.reply is not None and not envelope.reply.done():
            envelope.reply.set_exception(error)
