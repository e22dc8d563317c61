"""Merge kernels writing their output straight into a file (a kernels.FileTarget: the threads that
compute it pwrite it through small per-thread stages) give the bytes the array output gives, in
place, touching nothing else of the file; a failed write is an error and leaves nothing staged for
the next merge. End to end, a merge whose writer hands out file targets writes the same folder as
one that writes every tensor from a buffer."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix.merge import kernels as K
from llamix.merge.output import HFFolderWriter

import merge_oracle as O
from helpers import merge_inputs_streamed, perturbed, tiny_tensors, write_model, write_tensors

# around the 16384-element chunks, the 65536-element stream chunks and the 256 KiB stages
SIZES = [1, 2047, 16385, 65537, 200003]
SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
WIDTH = {"float32": 4, "float16": 2, "bfloat16": 2}
SENTINEL = 0xA5


def inputs(tmp_path: Path, n: int, dtype: str, count: int = 3, seed: int = 0):
    """count tensors of n elements stored as dtype: (as arrays, as TensorRefs of a file)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(count):
        x = (rng.standard_normal(n) * 0.02 + (0.01 if i == 0 else 0.0)).astype(np.float32)
        arrays.append(O.f32_to_bf16(x) if dtype == "bfloat16" else x.astype(dtype))
    ck = write_tensors(tmp_path, {f"t{i}": (SHORT[dtype], a) for i, a in enumerate(arrays)})
    return [(a, dtype) for a in arrays], [(ck.ref(f"t{i}"), dtype) for i in range(count)]


def to_file(tmp_path: Path, call, n: int, out: str, lead: int = 8 * 37):
    """Run call(buffer=FileTarget) into a file of sentinel bytes at offset `lead`; the tensor's
    bytes, and the file's other bytes."""
    path = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.bin"
    size = lead + n * WIDTH[out] + 4096
    path.write_bytes(bytes([SENTINEL]) * size)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert call(buffer=K.FileTarget(fd, lead)) is None
    finally:
        os.close(fd)
    raw = path.read_bytes()
    assert len(raw) == size
    return raw[lead: lead + n * WIDTH[out]], raw[:lead] + raw[lead + n * WIDTH[out]:]


def calls(xs, out):
    """The file-capable kernels on inputs xs (the first is the base where there is one)."""
    base, rest = xs[0], xs[1:]
    return {
        "linear": lambda **k: K.linear(xs, [0.5, 0.3, 0.2], out=out, **k),
        "linear_bf16_work": lambda **k: K.linear(xs, [0.5, 0.3, 0.2], out=out, work="bfloat16", **k),
        "slerp": lambda **k: K.slerp(xs[1], xs[2], 0.3, out=out, **k),
        "task_arithmetic": lambda **k: K.task_vectors(base, rest, [K.sparsifier(weight=0.6), K.sparsifier(weight=0.4)],
                                                      out=out, **k),
        "ties": lambda **k: K.task_vectors(base, rest, [K.sparsifier(K.RANK, 0, 0, density=0.5, weight=1.0)] * 2,
                                           consensus="sum", name="t", out=out, **k),
        "model_stock": lambda **k: K.model_stock(base, rest, out=out, **k),
        "nuslerp": lambda **k: K.nuslerp(rest[0], rest[1], 0.4, base=base, out=out, **k),
        "nuslerp_no_base": lambda **k: K.nuslerp(rest[0], rest[1], 0.4, out=out, **k),
        "multislerp": lambda **k: K.multislerp(rest, [0.6, 0.4], base=base, out=out, **k),
        "multislerp_one": lambda **k: K.multislerp(rest[:1], [1.0], out=out, **k),  # the input copied as stored
    }


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype,out", [("bfloat16", "bfloat16"), ("float32", "float32"), ("bfloat16", "float32"),
                                       ("float16", "bfloat16")])
def test_file_output_is_the_array_output_in_place(tmp_path, isa, threads, n, dtype, out):
    in_mem, in_file = inputs(tmp_path, n, dtype)
    for xs in (in_mem, in_file):
        for name, call in calls(xs, out).items():
            want = np.asarray(call()).view(np.uint8).tobytes()
            got, rest = to_file(tmp_path, call, n, out)
            assert got == want, name
            assert set(rest) == {SENTINEL}, name


def test_file_output_streamed_inputs(tmp_path):
    """Multi-pass kernels reading their inputs chunk by chunk on every pass (no cache budget)."""
    n = 70001
    _, xs = inputs(tmp_path, n, "bfloat16")
    with merge_inputs_streamed():
        for name, call in calls(xs, "bfloat16").items():
            want = np.asarray(call()).view(np.uint8).tobytes()
            got, _ = to_file(tmp_path, call, n, "bfloat16")
            assert got == want, name


def test_linear_to_file_against_float64(tmp_path, threads):
    """An independent check of the bytes in the file: numpy float64, rounded once to bf16."""
    n = 100003
    xs, _ = inputs(tmp_path, n, "bfloat16")
    w = [0.5, 0.3, 0.2]
    ref = O.linear([O.bf16_to_f64(a) for a, _ in xs], w)
    got, _ = to_file(tmp_path, lambda **k: K.linear(xs, w, out="bfloat16", **k), n, "bfloat16")
    got = O.bf16_to_f64(np.frombuffer(got, np.uint16))
    # float32 accumulation (error at most a few float32 ulps of the inputs' scale), then one
    # rounding to bf16 (half a bf16 ulp of the result)
    ulp = np.spacing(np.maximum(np.abs(ref), np.abs(got)).astype(np.float32)).astype(np.float64) * 2.0 ** 16
    scale = np.max([np.abs(O.bf16_to_f64(a)) for a, _ in xs], axis=0)
    assert np.all(np.abs(got - ref) <= 0.5 * ulp + 4 * 2.0 ** -24 * scale)


def test_failed_write_is_an_error_and_leaves_nothing_staged(tmp_path):
    n = 70001
    xs, _ = inputs(tmp_path, n, "bfloat16")
    ro = tmp_path / "readonly.bin"
    ro.write_bytes(b"\0" * (2 * n + 64))
    fd = os.open(ro, os.O_RDONLY)
    try:
        with pytest.raises(RuntimeError, match="writing the output failed"):
            K.linear(xs, [0.5, 0.3, 0.2], out="bfloat16", buffer=K.FileTarget(fd, 0))
    finally:
        os.close(fd)
    # the next merge writes its own bytes only (nothing left over from the failed one)
    want = np.asarray(K.slerp(xs[0], xs[1], 0.5, out="bfloat16")).view(np.uint8).tobytes()
    got, rest = to_file(tmp_path, lambda **k: K.slerp(xs[0], xs[1], 0.5, out="bfloat16", **k), n, "bfloat16")
    assert got == want and set(rest) == {SENTINEL}


def test_bad_targets_are_refused(tmp_path):
    xs, _ = inputs(tmp_path, 10, "float32")
    with pytest.raises(ValueError, match="file target"):
        K.linear(xs, [1, 1, 1], buffer=K.FileTarget(-1, 0))
    with pytest.raises(ValueError, match="buffer"):
        K.linear(xs, [1, 1, 1], buffer="nope")


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "model_stock", "multislerp", "ties", "slerp", "nuslerp",
                                    "nuslerp_row_wise", "nuslerp_rows"])
def test_sharded_merge_through_file_targets_equals_buffered(tmp_path, monkeypatch, method):
    t = tiny_tensors(0, layers=2, hidden=32, ffn=48)
    base, a, b = (str(write_model(tmp_path / n, perturbed(t, i) if i else t, dtype="bfloat16", layers=2, hidden=32))
                  for i, n in enumerate(("base", "a", "b")))
    keys = {"ties": ("weight", "density"), "task_arithmetic": ("weight",), "multislerp": ("weight",),
            "linear": ("weight",), "nuslerp": ("weight",), "nuslerp_row_wise": ("weight",),
            "nuslerp_rows": ("weight",)}.get(method, ())
    two = [{"model": m, "parameters": {k: v for k, v in (("weight", w), ("density", 0.5)) if k in keys}}
           for m, w in ((a, 0.6), (b, 0.4))]
    if method == "slerp":
        cfg = {"merge_method": "slerp", "base_model": base, "parameters": {"t": 0.3},
               "slices": [{"sources": [{"model": base, "layer_range": [0, 2]}, {"model": a, "layer_range": [0, 2]}]}]}
    elif method == "linear":
        cfg = {"merge_method": "linear", "models": [{"model": base, "parameters": {"weight": 0.4}}] + two}
    elif method.startswith("nuslerp"):  # flattened, per row, and per column (transposed in Python, pwritten)
        params = {"nuslerp": {}, "nuslerp_rows": {"nuslerp_flatten": False},
                  "nuslerp_row_wise": {"nuslerp_flatten": False, "nuslerp_row_wise": True}}[method]
        cfg = {"merge_method": "nuslerp", "base_model": base, "models": two, "parameters": params}
    else:
        cfg = {"merge_method": method, "base_model": base, "models": two}
    cfg["dtype"] = "bfloat16"
    written = []
    real = HFFolderWriter.target

    def counted(self, task):
        written.append(task.name)
        return real(self, task)

    monkeypatch.setattr(HFFolderWriter, "target", counted)
    llamix.merge(cfg, tmp_path / "direct", shard_size="8KB", progress=False)
    assert written  # the kernels wrote the tensors
    monkeypatch.setattr(HFFolderWriter, "target", None)  # every tensor through write()
    llamix.merge(cfg, tmp_path / "buffered", shard_size="8KB", progress=False)
    direct, buffered = sorted((tmp_path / "direct").iterdir()), sorted((tmp_path / "buffered").iterdir())
    assert [p.name for p in direct] == [p.name for p in buffered]
    assert sum(p.name.endswith(".safetensors") for p in direct) > 2
    for p, q in zip(direct, buffered):
        assert p.read_bytes() == q.read_bytes(), p.name
