"""Continuous batching: several generation :class:`Request` s decoding together on one :class:`Model`.

A :class:`BatchEngine` owns ``n_parallel`` slots, each a KV cache of the model's ``n_ctx``
positions, and a bounded queue of waiting requests. One thread runs the steps: each step admits
queued requests into free slots, then runs ONE forward pass (``_C.Transformer.forward_batch``)
over every busy slot: a token for each decoding request and a chunk of prompt for each request
still reading its prompt (at most ``n_batch`` tokens in all), every sequence on its own cache.
Each request samples its next token from its own logits with its own sampler, so greedy results
are the same as running the request alone (``Model.run``): the kernels give each row the result
it gets alone. A request joins at the next step; a cancelled one (its client went away) leaves
its slot at the next step, without sampling another token.

Results go to each request's ``sink`` on the engine thread: a :class:`Step` per sampled token, an
exception if the request failed, and ``None`` when it is over (finished, failed or cancelled).
:meth:`BatchEngine.run` wraps that in a blocking iterator; an asyncio server hands ``sink`` a
function that posts to its loop (``loop.call_soon_threadsafe``). :meth:`BatchEngine.call` runs
other work on the model (embeddings, prompt log-probabilities) on the engine thread between
steps, since every forward pass shares the model's scratch memory.

A slot keeps the tokens its cache holds; a new request goes to the free slot whose cached tokens
share the longest prefix with its prompt, and only the rest of the prompt is evaluated (a chat's
next turn reuses its conversation). A longer prefix held by another slot is copied from that
slot's cache (``KVCache.copy_prefix``), so requests that share a system prompt, or the ``n``
choices of one request, evaluate it once.
"""
from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
import time
from typing import Callable, Iterator, Union

import numpy as np

from .._runtime import _C
from .engine import Request, Step
from .model import N_BATCH, Model

Item = Union[Step, BaseException, None]   # what a sink receives


class QueueFull(RuntimeError):
    """The engine's queue of waiting requests is full (a server answers 503)."""


class EngineStopped(RuntimeError):
    """The engine was stopped before or while the request ran."""


class Job:
    """A submitted request: ``request`` (its state: tokens, text, finish reason) and
    :meth:`cancel`. ``n_prompt_evaluated``: prompt tokens actually run (a cached prefix is not);
    ``t_first`` / ``t_done``: ``time.perf_counter()`` at the first sampled token and at the end."""

    def __init__(self, engine: "BatchEngine", request: Request, sink: Callable[[Item], None]):
        self.engine, self.request, self._sink = engine, request, sink
        self.cancelled = False
        self.finished = False
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None
        self.t_done: float | None = None
        self.n_prompt_evaluated = 0

    def cancel(self) -> None:
        """Stop the request: a queued one is dropped now, a running one frees its slot at the next
        step. Safe from any thread, and after the request finished (then it does nothing)."""
        self.engine._cancel(self)

    def _emit(self, item: Item) -> None:
        if self.finished:
            return
        if item is None or isinstance(item, BaseException):
            if isinstance(item, BaseException):
                self._sink(item)
            self.finished = True
            self.t_done = time.perf_counter()
            self._sink(None)
            return
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self._sink(item)


class _Slot:
    """One sequence's KV cache and the tokens it holds."""

    def __init__(self, model: Model):
        self.cache = model.new_kv_cache()
        self.cached: list[int] = []   # the tokens whose keys and values fill the cache's first positions
        self.job: Job | None = None
        self.pending: list[int] = []  # tokens to evaluate next: the prompt's rest, or the last sampled token


class BatchEngine:
    """Continuous batching of :class:`Request` s on ``model`` with ``n_parallel`` KV cache slots of
    ``model.n_ctx`` positions each, at most ``max_queue`` requests waiting, at most ``n_batch``
    tokens per forward pass. Start with :meth:`start` (or use as a context manager); the model
    must not be run directly while the engine runs (use :meth:`call`)."""

    def __init__(self, model: Model, n_parallel: int = 4, max_queue: int = 64, n_batch: int = N_BATCH):
        if n_parallel < 1 or max_queue < 0 or n_batch < 1:
            raise ValueError(f"n_parallel ({n_parallel}) and n_batch ({n_batch}) must be >= 1, max_queue "
                             f"({max_queue}) >= 0")
        self.model = model
        self.n_parallel, self.max_queue, self.n_batch = int(n_parallel), int(max_queue), int(n_batch)
        self.slots = [_Slot(model) for _ in range(self.n_parallel)]
        self._queue: collections.deque[Job] = collections.deque()
        self._calls: list[tuple[Callable, tuple, dict, concurrent.futures.Future]] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # counters (read by a metrics endpoint; written by the engine thread only)
        self.n_prompt_tokens = 0      # prompt tokens evaluated
        self.n_generated = 0          # tokens sampled
        self.n_steps = 0              # forward passes
        self.busy_s = 0.0             # seconds spent in steps

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> "BatchEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llamix-batch", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every queued and running request (their sinks get :class:`EngineStopped`, then
        None) and end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "BatchEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- requests ---------------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def slots_busy(self) -> int:
        return sum(s.job is not None for s in self.slots)

    def submit(self, request: Request, sink: Callable[[Item], None]) -> Job:
        """Queue ``request``; ``sink`` then receives its steps on the engine thread (see the module
        docstring). Raises :class:`QueueFull` when ``max_queue`` requests already wait and
        :class:`EngineStopped` after :meth:`stop`."""
        if len(request.prompt) >= self.model.n_ctx:
            raise ValueError(f"Requested tokens ({len(request.prompt)}) exceed context window of {self.model.n_ctx}")
        job = Job(self, request, sink)
        with self._cv:
            if self._stopping:
                raise EngineStopped("the engine is stopped")
            free = self.n_parallel - self.slots_busy
            if len(self._queue) >= self.max_queue + max(free, 0):
                raise QueueFull(f"{len(self._queue)} requests are waiting (the queue holds {self.max_queue})")
            self._queue.append(job)
            self._cv.notify_all()
        return job

    def run(self, request: Request) -> Iterator[Step]:
        """The steps of ``request`` as it runs batched with the others (a blocking iterator, as
        ``Model.run`` gives them); closing the iterator early cancels the request."""
        items: queue.SimpleQueue = queue.SimpleQueue()
        job = self.submit(request, items.put)
        try:
            while True:
                item = items.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel()

    def call(self, fn: Callable, *args, **kwargs) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` on the engine thread between two steps (work that uses the
        model's own KV cache or forward pass: ``create_embedding``, ``logits``); returns a Future."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._stopping:
                raise EngineStopped("the engine is stopped")
            self._calls.append((fn, args, kwargs, fut))
            self._cv.notify_all()
        return fut

    def _cancel(self, job: Job) -> None:
        with self._cv:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                job._emit(None)
            self._cv.notify_all()

    # --- the engine thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._queue or self._calls or self.slots_busy):
                    self._cv.wait()
                if self._stopping:
                    break
                calls, self._calls = self._calls, []
                self._admit()
            for fn, args, kwargs, fut in calls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(*args, **kwargs))
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(e)
            for slot in self.slots:
                if slot.job is not None and slot.job.cancelled:
                    self._release(slot, None)
            if self.slots_busy:
                try:
                    self._step()
                except Exception as e:  # noqa: BLE001 - a bug here must not leave requests waiting forever
                    for slot in self.slots:
                        slot.cached = []
                        self._release(slot, e)
        self._shutdown()

    def _admit(self) -> None:
        """Move queued requests into free slots (caller holds the lock): each into the free slot
        whose cache shares the longest prefix with its prompt. When another slot's cache shares a
        longer prefix (a common system prompt; the ``n`` choices of one request), its keys and values
        for that prefix are copied over instead of evaluated again; a request whose prefix another
        slot is still evaluating waits for that slot rather than evaluating the prefix twice."""
        free = [s for s in self.slots if s.job is None]
        waiting: list[Job] = []
        while self._queue and free:
            job = self._queue.popleft()
            head = job.request.prompt[:-1]   # the last prompt token always runs: its logits
            prefix = {s: _common_prefix(s.cached, head) for s in self.slots}
            best, donor = max(free, key=prefix.get), max(self.slots, key=prefix.get)
            if max(_in_flight_prefix(s, head) for s in self.slots) >= prefix[donor] + _WAIT_MIN:
                waiting.append(job)
                continue
            free.remove(best)
            common = prefix[donor]
            if common > prefix[best]:
                best.cache.copy_prefix(donor.cache, common)
            best.cached = donor.cached[:common]
            best.pending = list(job.request.prompt[common:])
            best.job = job
        self._queue.extendleft(reversed(waiting))

    def _step(self) -> None:
        """One forward pass over every busy slot, then each request's sampling."""
        t0 = time.perf_counter()
        busy = [s for s in self.slots if s.job is not None]
        budget = self.n_batch
        batch: list[tuple[_Slot, list[int], bool]] = []   # (slot, tokens, wants logits)
        # decoding sequences first (one token each), then prompt chunks in the room left
        for slot in sorted(busy, key=lambda s: len(s.pending)):
            if budget == 0:
                break
            chunk = slot.pending[:budget]
            budget -= len(chunk)
            batch.append((slot, chunk, len(chunk) == len(slot.pending)))
        try:
            logits = self.model._t.forward_batch(
                [s.cache for s, _, _ in batch], np.array([t for _, ch, _ in batch for t in ch], dtype=np.int32),
                [len(s.cached) for s, _, _ in batch], [len(ch) for _, ch, _ in batch],
                [int(out) for _, _, out in batch])
        except Exception as e:  # noqa: BLE001 - the requests in this batch fail, the engine goes on
            for slot, _, _ in batch:
                slot.cached = []
                self._release(slot, e)
            return
        row = 0
        for slot, chunk, out in batch:
            slot.cached.extend(chunk)
            del slot.pending[:len(chunk)]
            job = slot.job
            if not job.request.tokens and not job.request.done:
                job.n_prompt_evaluated += len(chunk)
                self.n_prompt_tokens += len(chunk)
            if not out:
                continue
            z = logits[row]
            row += 1
            if job.cancelled:
                self._release(slot, None)
                continue
            try:
                step = self._sample(job.request, z, len(slot.cached))
            except Exception as e:  # noqa: BLE001 - a failing request (its grammar, its sampler) ends alone
                self._release(slot, e)
                continue
            self.n_generated += not step.eog
            job._emit(step)
            if job.request.done:
                self._release(slot, None)
            else:
                slot.pending = [step.token]
        self.n_steps += 1
        self.busy_s += time.perf_counter() - t0

    def _sample(self, request: Request, logits: np.ndarray, n_past: int) -> Step:
        # as Model.run: the request samples; a full context ends it
        step = request.step(logits)
        if not request.done and n_past >= self.model.n_ctx:
            step.text += request.stop("length")
            step.finish_reason = request.finish_reason
        return step

    def _release(self, slot: _Slot, error: BaseException | None) -> None:
        job, slot.job, slot.pending = slot.job, None, []
        if job is not None:
            job._emit(error)

    def _shutdown(self) -> None:
        with self._cv:
            queued, self._queue = list(self._queue), collections.deque()
            calls, self._calls = self._calls, []
        for job in queued:
            job._emit(EngineStopped("the engine was stopped before the request ran"))
        for slot in self.slots:
            if slot.job is not None:
                self._release(slot, EngineStopped("the engine was stopped while the request ran"))
        for _, _, _, fut in calls:
            fut.cancel()


# Fewer shared tokens than this are evaluated again rather than waited for: waiting costs the
# request at least one step of latency.
_WAIT_MIN = 16


def _in_flight_prefix(slot: _Slot, prompt: list[int]) -> int:
    """The prefix ``slot`` will share with ``prompt`` once it has evaluated the rest of its own
    prompt (0 for a slot that is not reading a prompt)."""
    job = slot.job
    if job is None or job.request.tokens or len(slot.pending) < 2:
        return 0
    return _common_prefix(slot.cached + slot.pending, prompt)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


__all__ = ["BatchEngine", "EngineStopped", "Job", "QueueFull"]
