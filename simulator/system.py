"""The actor system: spawns actors, runs their mailboxes, supervises them, stops them.

Failures never hang a run and never vanish:

* every actor loop and every started task is watched: a loop that dies stops its actor (its
  queued messages are refused and their work released) and is recorded;
* a hook that raises (``on_failure``, ``on_start`` or ``on_stop`` during a restart) is recorded
  and the actor is stopped;
* :meth:`ActorSystem.stop_all` stops every actor whatever any of them raises;
* a message told to a stopped actor is a dead letter, recorded as a failure (an asker gets
  :class:`~simulator.actor.ActorStopped` instead);
* replies an actor deferred and never gave are rejected when it stops.

All of them land in :attr:`ActorSystem.failures`; a run with any exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Any, Callable, Coroutine, Sequence, TypeVar

from simulator.activity import CURRENT_LEASE, Activity
from simulator.actor import (
    A,
    Actor,
    ActorRef,
    ActorStopped,
    AskTimeout,
    Directive,
    Envelope,
    Failure,
    Promise,
)
from simulator.clock import Clock

T = TypeVar("T")
SYSTEM = "<system>"  # owner of the system's own background tasks


class Cell:
    """One actor's place in the system: its mailbox, its loop task, its side tasks."""

    def __init__(self, system: ActorSystem, actor: Actor) -> None:
        self.system = system
        self.activity = system.activity
        self.actor = actor
        self.name = actor.name
        self.queue: deque[Envelope] = deque()
        #: the future the loop awaits while the mailbox is empty (None while it runs)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.handling: Sequence[Envelope] = ()
        self.deferred: dict[Promise, None] = {}  # in the order given: refused in that order
        self.task: asyncio.Task[None] | None = None

    def put(self, message: object, reply: Promise | None) -> None:
        if self.closed:
            if reply is not None:
                reply.reject(ActorStopped(f"{self.name} is stopped"))
            else:
                self.system.dead_letter(self.name, message)
            return
        self.queue.append(Envelope(self.activity, self.name, message, reply))
        waiter = self.waiter
        if waiter is not None:  # the loop waits: wake it (once, however many messages come)
            self.waiter = None
            if not waiter.done():  # not if the loop was cancelled meanwhile
                waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """What the loop awaits while the mailbox is empty: a bare future that the next
        ``put`` resolves. (An ``asyncio.Event`` here cost a clear, a set and a waiter list per
        message, and a coroutine around the wait.)"""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def get(self) -> Envelope:
        """The next message, once there is one."""
        while not self.queue:
            await self.wait()
        return self.queue.popleft()

    def take_while(self, wanted: Callable[[Envelope], bool], limit: int) -> list[Envelope]:
        """Up to ``limit`` more envelopes from the head, as long as each is ``wanted``."""
        taken: list[Envelope] = []
        while self.queue and len(taken) < limit and wanted(self.queue[0]):
            taken.append(self.queue.popleft())
        return taken

    def defer_reply(self) -> Promise | None:
        if len(self.handling) != 1 or self.handling[0].reply is None:
            return None
        envelope = self.handling[0]
        promise, envelope.reply = envelope.reply, None
        assert promise is not None
        self.deferred[promise] = None
        promise.on_settle(lambda: self.deferred.pop(promise, None))
        return promise

    def close(self) -> None:
        """Refuse what is queued and release every unit of work this actor holds (deferred
        replies wait for ``on_stop``, which may still give them)."""
        self.closed = True
        stopped = ActorStopped(f"{self.name} stopped")
        for envelope in [*self.queue, *self.handling]:
            if envelope.reply is not None:
                envelope.reply.reject(stopped)
            envelope.release()
        self.queue.clear()

    def refuse_deferred(self) -> None:
        """Replies the actor deferred and did not give by the end of ``on_stop``."""
        for promise in list(self.deferred):
            promise.reject(ActorStopped(f"{self.name} stopped before it answered"))


class ActorSystem:
    """Owns the actors of one run: spawns them, records their failures, stops them."""

    def __init__(self, activity: Activity | None = None, clock: Clock | None = None) -> None:
        self.activity = activity or Activity()
        self.clock = clock
        self.failures: list[Failure] = []
        self.dead_letters = 0
        self._cells: dict[str, Cell] = {}
        # owner -> its tasks, in the order started (dicts: cancelled in a fixed order, always)
        self._side_tasks: dict[str, dict[asyncio.Task[Any], None]] = {}
        self._closing = False

    # -- spawning and tasks -------------------------------------------------------------------

    async def spawn(self, actor: A) -> ActorRef[A]:
        if actor.name in self._cells:
            raise ValueError(f"an actor named {actor.name!r} exists already")
        cell = Cell(self, actor)
        ref: ActorRef[A] = ActorRef(cell, actor.name)
        actor.ref, actor._cell = ref, cell
        await actor.on_start()
        self._cells[actor.name] = cell
        context = contextvars.Context()  # the loop sets each message's lease itself
        cell.task = asyncio.get_running_loop().create_task(
            self._run(cell), name=actor.name, context=context)
        cell.task.add_done_callback(lambda task: self._loop_ended(cell, task))
        return ref

    def start_task(self, owner: str, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as counted work (its own lease) until it ends; a failure is recorded,
        and stopping ``owner`` cancels it."""
        lease = self.activity.lease(owner)
        context = contextvars.copy_context()
        context.run(CURRENT_LEASE.set, lease)
        task = asyncio.get_running_loop().create_task(coro, context=context)
        tasks = self._side_tasks.setdefault(owner, {})
        tasks[task] = None

        def done(finished: asyncio.Task[Any]) -> None:
            tasks.pop(finished, None)
            lease.release()
            if not finished.cancelled() and finished.exception() is not None:
                self._record(owner, "task", finished.exception(), Directive.RESUME.value)

        task.add_done_callback(done)
        return task

    def names(self) -> list[str]:
        return list(self._cells)

    async def wait_in_clock_time(self, promise: Promise, timeout_s: float, to: str) -> Any:
        """Await ``promise`` for at most ``timeout_s`` of the clock's time (see ActorRef.ask)."""
        lease = CURRENT_LEASE.get()

        def expire() -> None:
            promise.reject(AskTimeout(f"no reply from {to} within {timeout_s:g} s"))

        timer = (self.clock.call_later(timeout_s, expire) if self.clock is not None else
                 asyncio.get_running_loop().call_later(timeout_s, expire))
        if lease is not None and lease.held:
            lease.suspend()
            promise.on_settle(lease.renew)  # before the asker runs again: never uncounted
        try:
            return await promise.future
        finally:
            timer.cancel()
            if lease is not None:
                lease.renew()

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self, name: str) -> None:
        """Stop one actor: it finishes nothing more, queued messages are refused, its tasks are
        cancelled, then ``on_stop`` runs (an error there is recorded, not raised)."""
        cell = self._cells.pop(name, None)
        if cell is None:
            return
        cell.close()
        side = self._side_tasks.pop(name, {})
        pending = [task for task in (cell.task, *side)
                   if task is not None and task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._hook(cell, "on_stop", cell.actor.on_stop())
        cell.refuse_deferred()

    async def stop_all(self) -> None:
        """Stop every actor (the last spawned first), whatever fails, then cancel the system's
        own tasks."""
        self._closing = True
        for name in reversed(list(self._cells)):
            try:
                await self.stop(name)
            except Exception as error:  # noqa: BLE001 - the others must still stop
                self._record(name, "stop", error, Directive.STOP.value)
        left = [task for tasks in self._side_tasks.values() for task in tasks]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    def dead_letter(self, name: str, message: object) -> None:
        self.dead_letters += 1
        if not self._closing:
            self.failures.append(Failure(name, type(message).__name__,
                                         "dead letter: told to a stopped actor", "none"))

    def quiet_problem(self) -> str | None:
        """A debug check for the clock: when time is about to move, no mailbox holds a message
        and every message being handled is waiting on the clock."""
        for cell in self._cells.values():
            busy = [e for e in cell.handling if not e.waiting]
            if cell.queue or busy:
                return f"{cell.name} still holds {len(cell.queue) + len(busy)} message(s)"
        return None

    # -- the mailbox loop and supervision ----------------------------------------------------

    async def _run(self, cell: Cell) -> None:
        actor = cell.actor

        def batchable(envelope: Envelope) -> bool:
            return type(envelope.message) in actor.batchable

        queue = cell.queue
        while not cell.closed:
            while not queue:  # as Cell.get, inlined: no coroutine per message
                await cell.wait()
            first = queue.popleft()
            batch = [first]
            if actor.batchable and batchable(first):
                batch += cell.take_while(batchable, actor.max_batch - 1)
            cell.handling = batch
            CURRENT_LEASE.set(first)
            try:
                if len(batch) == 1:  # as _handle, inlined: no coroutine per message
                    try:
                        result = await actor.receive(first.message)
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:  # noqa: BLE001 - routed, never swallowed
                        await self._fail(cell, first, error)
                    else:
                        if first.reply is not None:
                            first.reply.resolve(result)
                else:
                    await self._handle_batch(cell, batch)
            finally:
                cell.handling = ()
                for envelope in batch:
                    envelope.release()

    def _loop_ended(self, cell: Cell, task: asyncio.Task[None]) -> None:
        """An actor's loop only ends when the actor is stopped; any other end (an error, a
        stray cancellation) is recorded and stops the actor, releasing its work."""
        if cell.closed:
            return
        error = task.exception() if not task.cancelled() else asyncio.CancelledError(
            "the actor's loop was cancelled")
        self._record(cell.name, "actor loop", error, Directive.STOP.value)
        self._stop_soon(cell)

    async def _handle_batch(self, cell: Cell, batch: list[Envelope]) -> None:
        try:
            outcomes = await cell.actor.receive_batch([envelope.message for envelope in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"receive_batch answered {len(outcomes)} of {len(batch)}")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the whole batch failed: one failure
            for envelope in batch:
                if envelope.reply is not None:
                    envelope.reply.reject(error)
            await self._supervise(cell, batch[0].message, error)
            return
        for envelope, outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                await self._fail(cell, envelope, outcome)
            elif envelope.reply is not None:
                envelope.reply.resolve(outcome)

    async def _fail(self, cell: Cell, envelope: Envelope, error: Exception) -> None:
        """``error`` is the answer to an ask; a failed tell or an unexpected error is also a
        failure of the actor, for its supervisor."""
        reply = envelope.reply
        if reply is not None:
            reply.reject(error)
        if reply is None or not isinstance(error, cell.actor.expected_errors):
            await self._supervise(cell, envelope.message, error)

    async def _supervise(self, cell: Cell, message: object, error: BaseException) -> None:
        actor = cell.actor
        if self._closing and isinstance(error, ActorStopped):
            return  # shutting down stopped what this message was waiting on: no failure
        try:
            directive = await actor.on_failure(message, error)
        except Exception as hook_error:  # noqa: BLE001 - a broken supervisor stops the actor
            self._record(cell.name, type(message).__name__, error, Directive.STOP.value)
            self._record(cell.name, "on_failure", hook_error, Directive.STOP.value)
            self._stop_soon(cell)
            return
        self._record(cell.name, type(message).__name__, error, directive.value)
        if directive is Directive.RESTART:
            restarted = (await self._hook(cell, "restart", actor.on_stop()) and
                         await self._hook(cell, "restart", actor.on_start()))
            if not restarted:
                self._stop_soon(cell)
        elif directive is Directive.STOP:
            self._stop_soon(cell)

    async def _hook(self, cell: Cell, hook: str, call: Coroutine[Any, Any, None]) -> bool:
        try:
            await call
        except Exception as error:  # noqa: BLE001 - recorded; the caller decides what follows
            self._record(cell.name, hook, error, Directive.STOP.value)
            return False
        return True

    def _stop_soon(self, cell: Cell) -> None:
        """Stop an actor from inside its own loop (or its done callback): close its mailbox now,
        so it takes nothing more, and finish stopping in a task of the system's."""
        if self._cells.get(cell.name) is not cell:
            return
        cell.close()
        self.start_task(SYSTEM, self.stop(cell.name))

    def _record(self, actor: str, what: str, error: BaseException | None,
                directive: str) -> None:
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown"
        self.failures.append(Failure(actor, what, text, directive))
