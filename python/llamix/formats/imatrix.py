"""Importance matrices as llama.cpp stores them (llama-imatrix writes, llama-quantize reads).

Two formats (llama.cpp ``tools/imatrix/imatrix.cpp``, ``common/imatrix-loader.cpp``):

- GGUF (the default since 2025): ``general.type = "imatrix"``, ``imatrix.datasets`` (array of
  strings), ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (uint32); per matrix input two
  F32 tensors: ``NAME.in_sum2`` of shape (n_mat, k) holding the sum over tokens of x_j^2 for each
  input column j, and ``NAME.counts`` of shape (n_mat, 1), the number of tokens summed.
- legacy ``.dat``: int32 n_entries; per entry int32 name length, the name, int32 ncall, int32
  nval, float32 values[nval] = (sum / count) * ncall; then optionally int32 chunk count, int32
  length and the dataset name.

Either way the importance of column j is sum / count (llama-quantize's reading), which is what
:meth:`ImportanceMatrix.means` returns.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .gguf import GGUF_MAGIC, GGUFReader, GGUFWriter, ValueType, write_replacing
from .gguf_llama import MetadataEntry

SUMS, COUNTS = ".in_sum2", ".counts"


@dataclass
class ImportanceMatrix:
    """Per matrix (by tensor name): ``sums[name]`` float64 (n_mat, k) sums of squared inputs and
    ``counts[name]`` float64 (n_mat,) tokens summed; the calibration files' names, and chunks."""
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def means(self) -> dict:
        """name -> float32 (k,) mean squared activation per input column (expert 0 of a 3-D
        weight; columns of a matrix that saw no token get 1, as llama-quantize does)."""
        out = {}
        for name, s in self.sums.items():
            c = self.counts[name]
            m = np.where(c[:, None] > 0, s / np.maximum(c[:, None], 1e-300), 1.0)
            out[name] = np.ascontiguousarray(m[0], dtype=np.float32) if m.shape[0] == 1 else m.astype(np.float32)
        return out


def read_imatrix(path: str | os.PathLike) -> ImportanceMatrix:
    """Read either format (told apart by the GGUF magic). Raises FormatError naming the file and
    the entry for a malformed file, FileNotFoundError for a missing one."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    return _read_gguf(path) if magic == GGUF_MAGIC else _read_legacy(path)


def _read_gguf(path: Path) -> ImportanceMatrix:
    r = GGUFReader(path)
    md = r.metadata
    im = ImportanceMatrix(datasets=[str(d) for d in md.get("imatrix.datasets", [])],
                          chunk_count=int(md.get("imatrix.chunk_count", 0)), chunk_size=int(md.get("imatrix.chunk_size", 0)))
    names = sorted({n[: -len(SUMS)] for n in r.tensors if n.endswith(SUMS)} |
                   {n[: -len(COUNTS)] for n in r.tensors if n.endswith(COUNTS)})
    if not names:
        raise FormatError(f"{path}: no {SUMS}/{COUNTS} tensors: not an importance matrix")
    for name in names:
        s, c = r.tensors.get(name + SUMS), r.tensors.get(name + COUNTS)
        if s is None or c is None:
            raise FormatError(f"{path}: entry {name!r} has {'no ' + SUMS if s is None else 'no ' + COUNTS} tensor")
        if s.type.name != "F32" or c.type.name != "F32":
            raise FormatError(f"{path}: entry {name!r}: sums and counts must be F32, got {s.type.name}, {c.type.name}")
        sums = np.asarray(s.array(), dtype=np.float64).reshape(-1, s.shape[-1])
        counts = np.asarray(c.array(), dtype=np.float64).reshape(-1)
        if counts.size != sums.shape[0]:
            raise FormatError(f"{path}: entry {name!r}: {counts.size} counts for {sums.shape[0]} matrices")
        if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(counts))) or np.any(sums < 0) or np.any(counts < 0):
            raise FormatError(f"{path}: entry {name!r} holds negative or non-finite values")
        im.sums[name], im.counts[name] = sums, counts
    return im


def _read_legacy(path: Path) -> ImportanceMatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str, what: str):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(data):
            raise FormatError(f"{path}: truncated at byte {pos} reading {what} (legacy imatrix .dat)")
        v = struct.unpack_from(fmt, data, pos)
        pos += n
        return v[0] if len(v) == 1 else v

    n_entries = take("<i", "the entry count")
    if n_entries < 1:
        raise FormatError(f"{path}: not an importance matrix (neither GGUF nor a legacy .dat with entries)")
    im = ImportanceMatrix()
    for i in range(n_entries):
        n = take("<i", f"entry {i}'s name length")
        if not 0 < n <= 4096:
            what = "not an importance matrix (neither GGUF nor llama.cpp's legacy .dat: " if i == 0 else ""
            raise FormatError(f"{path}: {what}entry {i}: bad name length {n}{')' if what else ''}")
        name = data[pos:pos + n].decode("utf-8", errors="replace")
        pos += n
        ncall = take("<i", f"entry {name!r}'s ncall")
        nval = take("<i", f"entry {name!r}'s value count")
        if nval < 1 or pos + 4 * nval > len(data):
            raise FormatError(f"{path}: entry {name!r}: {nval} values do not fit in the file")
        vals = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float64)
        pos += 4 * nval
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            raise FormatError(f"{path}: entry {name!r} holds negative or non-finite values")
        im.sums[name] = vals.reshape(1, -1)
        im.counts[name] = np.array([float(ncall)])
    if pos + 4 <= len(data):
        im.chunk_count = take("<i", "the chunk count")
        if pos + 4 <= len(data):
            n = take("<i", "the dataset name length")
            if 0 < n <= len(data) - pos:
                im.datasets.append(data[pos:pos + n].decode("utf-8", errors="replace"))
    return im


def write_imatrix(im: ImportanceMatrix, path: str | os.PathLike, legacy: bool | None = None) -> None:
    """Write ``im`` atomically: the GGUF format, or the legacy one when ``legacy`` (default: when
    ``path`` does not end in .gguf, as llama-imatrix decides)."""
    path = Path(path)
    if legacy is None:
        legacy = path.suffix.lower() != ".gguf"
    if not legacy:
        w = GGUFWriter(path)
        w.add("general.type", "imatrix")
        w.add("imatrix.datasets", list(im.datasets), ValueType.ARRAY, ValueType.STRING)
        w.add("imatrix.chunk_count", int(im.chunk_count), ValueType.UINT32)
        w.add("imatrix.chunk_size", int(im.chunk_size), ValueType.UINT32)
        for name in sorted(im.sums):
            w.add_tensor(name + SUMS, np.asarray(im.sums[name], dtype=np.float32), "F32")
            w.add_tensor(name + COUNTS, np.asarray(im.counts[name], dtype=np.float32).reshape(-1, 1), "F32")
        w.write()
        return
    out = bytearray(struct.pack("<i", len(im.sums)))
    chunk = max(int(im.chunk_size), 1)
    for name in sorted(im.sums):
        s, c = np.asarray(im.sums[name], np.float64), np.asarray(im.counts[name], np.float64)
        ncall = int(-(-c.max() // chunk)) if im.chunk_size else int(c.max())  # llama-imatrix: ceil(count / chunk)
        vals = np.where(c[:, None] > 0, s / np.maximum(c[:, None], 1e-300), 1.0) * ncall
        b = name.encode()
        out += struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, vals.size)
        out += vals.astype("<f4").tobytes()
    ds = (im.datasets[-1] if im.datasets else "").encode()
    out += struct.pack("<ii", int(im.chunk_count), len(ds)) + ds
    write_replacing(path, lambda f: f.write(out))


def quantize_metadata(path: str | os.PathLike, im: ImportanceMatrix) -> list[MetadataEntry]:
    """The ``quantize.imatrix.*`` entries llama-quantize writes into a file quantized with the
    importance matrix ``im`` read from ``path``: its file, first dataset, entry and chunk counts."""
    out = [MetadataEntry("quantize.imatrix.file", str(path), ValueType.STRING)]
    if im.datasets:
        out.append(MetadataEntry("quantize.imatrix.dataset", str(im.datasets[0]), ValueType.STRING))
    out += [MetadataEntry("quantize.imatrix.entries_count", len(im.sums), ValueType.UINT32),
            MetadataEntry("quantize.imatrix.chunks_count", int(im.chunk_count), ValueType.UINT32)]
    return out
