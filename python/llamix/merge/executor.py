"""Run a merge plan one output tensor at a time: map the inputs' tensors, merge them in C++,
hand the result to a writer, release the input pages. Peak memory is the output tensor plus the
kernels' scratch (a few times the largest tensor for the top-k masks), never the model.

Writers are pluggable (an output format is a writer): ``dtype_for(task)`` says which dtype the
merge should produce for a tensor (a quantizing GGUF writer asks for float32), ``write(name,
array)`` receives each merged tensor in plan order, ``begin(plan)`` / ``finish()`` / ``abort()``
bracket the run; ``write`` is called from one background thread, in order. See
output.HFFolderWriter.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Protocol

import numpy as np

from ..progress import Progress
from .kernels import NUMPY
from .plan import FLOAT_TYPES, MergePlan, TensorTask


class TensorWriter(Protocol):
    def begin(self, plan: MergePlan) -> None: ...
    def dtype_for(self, task: TensorTask) -> str: ...
    def write(self, name: str, array: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class OutputBuffers:
    """Two output arrays used in turn, so the pages of a model's worth of outputs are not faulted
    in and zeroed tensor after tensor. Safe only while the consumer is done with tensor k before
    tensor k + 2 is computed (execute() guarantees it)."""

    def __init__(self):
        self._raw = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
        self._turn = 0

    def get(self, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        dt = NUMPY[dtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self._turn ^= 1
        if self._raw[self._turn].nbytes < nbytes:
            self._raw[self._turn] = np.empty(nbytes, np.uint8)
        return self._raw[self._turn][:nbytes].view(dt).reshape(shape)


def merged_tensors(plan: MergePlan, seed: int = 0, dtype_for=None, progress: Optional[Progress] = None,
                   buffers: Optional[OutputBuffers] = None):
    """Yield (name, merged array) in plan order; input pages are released after each tensor.
    With `buffers`, the arrays are reused two tensors later (copy them to keep them)."""
    for task in plan.tensors:
        arrays = []
        for ref, name in task.inputs:
            w = plan.models[ref].weights
            arrays.append((w.get(name), FLOAT_TYPES[w.dtype(name)]))
        job = task.job(arrays, seed)
        if dtype_for is not None:
            job.out = dtype_for(task)
        if buffers is not None:
            job.buffer = buffers.get(job.out, task.shape)
        out = plan.method.merge(job).reshape(task.shape)
        del arrays, job
        nbytes = 0
        for ref, name in task.inputs:
            w = plan.models[ref].weights
            nbytes += w.file_of(name).nbytes(name)
            w.release(name)
        yield task.name, out
        if progress is not None:
            progress.update(nbytes, task.name)


def execute(plan: MergePlan, writer: TensorWriter, seed: int = 0, progress: Optional[bool] = None) -> None:
    """Merge every tensor of the plan into the writer; the writer is aborted on any error.

    Writing tensor k overlaps merging tensor k + 1: ``writer.write`` runs on one background
    thread, in plan order, with at most one write pending (so at most two outputs in memory)."""
    writer.begin(plan)
    try:
        with Progress(plan.input_bytes, "merge", quiet=None if progress is None else not progress) as bar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamix-merge-writer") as pool:
            pending = None
            for name, array in merged_tensors(plan, seed, writer.dtype_for, bar, OutputBuffers()):
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write, name, array)
            if pending is not None:
                pending.result()
        writer.finish()
    except BaseException:
        writer.abort()
        raise
