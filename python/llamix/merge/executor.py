"""Run a merge plan one output tensor at a time: the C++ kernels read the inputs' tensors from
their files (TensorRef: mapped while the tensor merges, else read chunk by chunk), merge them, and
hand the result to a writer. Peak memory
is the outputs waiting for the writer (at most MAX_PENDING_BYTES) plus the kernels' scratch (a
few times the largest tensor for the top-k masks), never the model.

Writers are pluggable (an output format is a writer): ``dtype_for(task)`` says which dtype the
merge should produce for a tensor (a quantizing GGUF writer asks for float32), ``write(name,
array)`` receives each merged tensor, ``begin(plan)`` / ``finish()`` / ``abort()`` bracket the
run; ``write`` is called from one background thread, in plan order, unless the writer sets
``concurrency`` > 1 after ``begin`` (then from that many threads, in any order). A writer that
lays its files out up front may also offer ``target(task)``: a kernels.FileTarget where that
tensor's bytes go (or None); methods that can (``file_output``) then have the kernels' threads
write the output there as they compute it, overlapping the writes with the reads and compute and
with no tensor-sized buffer in between, and ``write`` is not called for that tensor. See
output.HFFolderWriter.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Callable, Optional, Protocol

import numpy as np

from . import kernels
from .kernels import NUMPY
from .plan import FLOAT_TYPES, MergePlan, TensorTask


class TensorWriter(Protocol):
    def begin(self, plan: MergePlan) -> None: ...
    def dtype_for(self, task: TensorTask) -> str: ...
    def write(self, name: str, array: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class BufferPool:
    """Output arrays handed back once written and reused for later tensors, so the pages of a
    model's worth of outputs are not faulted in and zeroed tensor after tensor. A buffer is reused
    only for a tensor at least half its size: a small tensor holding the embedding's buffer would
    have the next large tensor allocate another (and the bytes waiting for the writer, counted by
    the tensors' sizes, would understate the memory held)."""

    def __init__(self):
        self._free: list[np.ndarray] = []  # raw uint8 buffers

    def get(self, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        dt = NUMPY[dtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        fits = [i for i, raw in enumerate(self._free) if nbytes <= raw.nbytes <= 2 * nbytes]
        raw = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes)) if fits else np.empty(nbytes, np.uint8)
        return raw[:nbytes].view(dt).reshape(shape)

    def put(self, array: np.ndarray) -> None:
        """Hand back a merged array once it is written. Only buffers that came from get() are kept
        (a method may return an array of its own, e.g. a view of an input)."""
        raw = array.base if array.base is not None else array
        if isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.ndim == 1 and raw.flags.owndata \
                and raw.flags.writeable:
            self._free.append(raw)


Progress = Callable[[float, float, str], None]  # progress(done, total, note)


class _Write:
    """One submitted write: done() once it ran, result() waits and raises what it raised."""

    __slots__ = ("fn", "args", "finished", "error")

    def __init__(self, fn, args):
        self.fn, self.args, self.finished, self.error = fn, args, threading.Event(), None

    def done(self) -> bool:
        return self.finished.is_set()

    def result(self) -> None:
        self.finished.wait()
        if self.error is not None:
            raise self.error


class WriterThreads:
    """The writer's background threads: submit(fn, *args) runs fn on one of them, in submission
    order. (concurrent.futures would do, but importing it and the logging package it brings took
    ~20 ms of every merge process's start-up, measured on the loaded 2-core bench machine.)"""

    def __init__(self, workers: int):
        self._workers = workers
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # started on demand: a merge whose kernels write
        # the output files themselves submits nothing

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.fn(*job.args)
            except BaseException as e:  # handed to whoever waits for it
                job.error = e
            finally:
                job.finished.set()

    def submit(self, fn, *args) -> _Write:
        job = _Write(fn, args)
        self._jobs.put(job)
        if len(self._threads) < self._workers:
            t = threading.Thread(target=self._run, name=f"llamix-merge-writer-{len(self._threads)}", daemon=True)
            t.start()
            self._threads.append(t)
        return job

    def __enter__(self) -> "WriterThreads":
        return self

    def __exit__(self, *exc) -> None:  # waits for every submitted write, as ThreadPoolExecutor's exit does
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()


def merged_tensors(plan: MergePlan, seed: int = 0, dtype_for=None, progress: Optional[Progress] = None,
                   buffers: Optional[BufferPool] = None, target=None):
    """Yield (name, merged array) in plan order; input pages are released after each tensor.
    With `buffers`, the arrays come from that pool (hand them back with put() when done).
    With `target` (a writer's target(task)), a method with file_output writes each tensor it
    gives a FileTarget for itself, and None is yielded in place of the array.
    ``progress(input_bytes_done, plan.input_bytes, name)`` is called after each tensor."""
    done = 0
    if not getattr(plan.method, "file_output", False):
        target = None
    for task in plan.tensors:
        arrays = []
        for ref, name in task.inputs:
            w = plan.models[ref].weights
            arrays.append((w.ref(name), FLOAT_TYPES[w.dtype(name)]))
        if task.align:  # rows realigned to the output vocabulary, in the working dtype
            work = [kernels.scale((np.asarray(a), dt), out=task.work, work=task.work) for a, dt in arrays]
            arrays = [(a, task.work) for a in plan.vocab.align([ref for ref, _ in task.inputs], work, task.work)]
        job = task.job(arrays, seed)
        if dtype_for is not None:
            job.out = dtype_for(task)
        place = target(task) if target is not None else None
        if place is not None:
            job.buffer = place
        elif buffers is not None:
            job.buffer = buffers.get(job.out, task.shape)
        try:
            out = plan.method.merge(job)
            if out is not None:
                out = out.reshape(task.shape)
            elif place is None:
                raise RuntimeError(f"{plan.method.name} returned no array")
        except (OSError, RuntimeError) as e:  # e.g. an input file truncated since it was opened
            raise type(e)(f"merging tensor {task.name!r}: {e}") from e
        del arrays, job
        nbytes = 0
        for ref, name in task.inputs:
            w = plan.models[ref].weights
            nbytes += w.nbytes(name)
            w.release(name)
        yield task.name, out
        done += nbytes
        if progress is not None:
            progress(done, plan.input_bytes, task.name)


# Outputs merged ahead of the writer, at most: the writer (one file, written by one thread) is the
# slowest stage, and a merge that waited on every write would leave a core idle while it does.
MAX_PENDING_BYTES = 32 << 20


def execute(plan: MergePlan, writer: TensorWriter, seed: int = 0, progress: Optional[Progress] = None) -> None:
    """Merge every tensor of the plan into the writer; the writer is aborted on any error.

    ``writer.write`` runs on a background thread (``writer.concurrency`` of them if the writer
    declares it can take tensors in any order, e.g. several shards written in parallel) while the
    next tensors are merged; up to MAX_PENDING_BYTES of merged outputs may wait for it."""
    writer.begin(plan)
    try:
        # writers that put tensors at fixed offsets (HFFolderWriter) may run several threads at once
        workers = max(1, int(getattr(writer, "concurrency", 1)))
        with WriterThreads(workers) as pool:
            buffers = BufferPool()
            pending: deque = deque()  # (future, array) in plan order
            waiting = 0
            target = getattr(writer, "target", None)
            for name, array in merged_tensors(plan, seed, writer.dtype_for, progress if callable(progress) else None, buffers,
                                              target if callable(target) else None):
                if array is None:  # written to its file by the kernels
                    continue
                pending.append((pool.submit(writer.write, name, array), array))
                waiting += array.nbytes
                while pending and (pending[0][0].done() or waiting > MAX_PENDING_BYTES):
                    future, done = pending.popleft()
                    future.result()
                    waiting -= done.nbytes
                    buffers.put(done)
            for future, _ in pending:
                future.result()
        writer.finish()
    except BaseException:
        writer.abort()
        raise
