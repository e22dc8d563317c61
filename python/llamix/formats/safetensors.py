"""Memory-mapped safetensors reading (format: https://github.com/huggingface/safetensors).

Layout: u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data.
Tensors are returned as read-only numpy views into the mapping; bf16 comes back as uint16 bit
patterns (numpy has no bfloat16).
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
import threading
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, FormatError, describe, parse_json

# safetensors dtype -> (numpy dtype, our type name)
DTYPES = {
    "F32": (np.dtype("<f4"), "f32"),
    "F16": (np.dtype("<f2"), "f16"),
    "BF16": (np.dtype("<u2"), "bf16"),
    "F64": (np.dtype("<f8"), "f64"),
    "I64": (np.dtype("<i8"), "i64"),
    "I32": (np.dtype("<i4"), "i32"),
    "I16": (np.dtype("<i2"), "i16"),
    "I8": (np.dtype("i1"), "i8"),
    "U8": (np.dtype("u1"), "u8"),
    "BOOL": (np.dtype("?"), "bool"),
}
_MAX_HEADER = 100 * 1024 * 1024
_MAX_DIMENSION = 2**62  # a shape entry must be below this (safetensors' are u64, numpy's int64)


class SafetensorsError(FormatError):
    """A safetensors file is truncated, corrupt or holds something unsupported."""


class TensorRef:
    """Where a tensor's bytes lie in a file: an open descriptor, a byte offset, dtype and shape.
    Streaming kernels (the merge) read it with pread a chunk at a time, so its pages are never
    mapped into the process; ``np.asarray(ref)`` gives the usual memory-mapped view instead."""

    __slots__ = ("fd", "offset", "dtype", "shape", "_view")

    def __init__(self, fd: int, offset: int, dtype: np.dtype, shape: tuple[int, ...], view):
        self.fd, self.offset, self.dtype, self.shape, self._view = fd, offset, dtype, shape, view

    def __array__(self, dtype=None, copy=None):
        arr = self._view()
        return arr if dtype is None else arr.astype(dtype)


class SafetensorsFile:
    """One memory-mapped .safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise SafetensorsError(f"{self.path}: file too short ({size} bytes) to be safetensors")
                (n,) = struct.unpack("<Q", f.read(8))
                if n > _MAX_HEADER or 8 + n > size:
                    raise SafetensorsError(f"{self.path}: header length {n} exceeds the file size {size} (truncated or not safetensors)")
                header = parse_json(f.read(n), f"{self.path}: header", error=SafetensorsError)
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else None
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        meta = header.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise SafetensorsError(f"{self.path}: header: __metadata__ must map names to strings, got {describe(meta)}")
        self.metadata: dict = meta or {}
        self._data_start = 8 + n
        data_len = size - self._data_start
        self._entries: dict[str, tuple[np.dtype, str, tuple[int, ...], int, int]] = {}
        for name, e in header.items():
            dtype_name, shape, (begin, end) = self._check_entry(name, e)
            np_dtype, short = DTYPES[dtype_name]
            nbytes = math.prod(shape) * np_dtype.itemsize
            if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} ({dtype_name} {list(shape)}) has data offsets [{begin}, {end}) "
                    f"that do not fit its size {nbytes} or the file's {data_len} data bytes (truncated?)")
            self._entries[name] = (np_dtype, short, shape, begin, end)

    def _check_entry(self, name: str, e) -> tuple[str, tuple[int, ...], tuple[int, int]]:
        """A header entry's dtype, shape and data offsets, each checked for type and range."""
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(e, dict):
            raise SafetensorsError(f"{where}: header entry must be an object with dtype, shape and data_offsets, "
                                   f"got {describe(e)}")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in e:
                raise SafetensorsError(f"{where}: header entry has no {key!r}")
        dtype_name, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise SafetensorsError(f"{where} has unsupported dtype {describe(dtype_name)} "
                                   f"(supported: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < _MAX_DIMENSION for d in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {describe(shape)}"
                                   + (f" {shape}" if isinstance(shape, list) and len(shape) <= 8 else ""))
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise SafetensorsError(f"{where}: data_offsets must be two integers [begin, end], got "
                                   f"{describe(offsets)}" + (f" {offsets}" if isinstance(offsets, list) and
                                                             len(offsets) <= 4 else ""))
        return dtype_name, tuple(shape), (offsets[0], offsets[1])

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> str:
        """Our type name: f32, f16, bf16, ..."""
        return self._entry(name)[1]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name)[2]

    def nbytes(self, name: str) -> int:
        e = self._entry(name)
        return e[4] - e[3]

    def get(self, name: str) -> np.ndarray:
        """A read-only view of the tensor in the mapping (bf16 as uint16)."""
        np_dtype, _, shape, begin, end = self._entry(name)
        if begin == end:
            return np.zeros(shape, dtype=np_dtype)
        arr = np.frombuffer(self._mmap, dtype=np_dtype, count=(end - begin) // np_dtype.itemsize,
                            offset=self._data_start + begin)
        return arr.reshape(shape)

    def ref(self, name: str) -> TensorRef:
        """The tensor as a TensorRef (file descriptor opened on first use, closed with this object)."""
        np_dtype, _, shape, begin, _ = self._entry(name)
        if getattr(self, "_fd", None) is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return TensorRef(self._fd, self._data_start + begin, np_dtype, shape, lambda: self.get(name))

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None

    def _page_range(self, begin: int, end: int) -> tuple[int, int]:
        page = mmap.PAGESIZE
        start = (self._data_start + begin) // page * page
        return start, min(len(self._mmap), -(-(self._data_start + end) // page) * page)

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's resident memory (they stay in the OS page
        cache and fault back in if read again): streaming readers call it after each tensor so
        the resident set stays near one tensor, not the whole file."""
        _, _, _, begin, end = self._entry(name)
        if self._mmap is None or begin == end or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start, stop = self._page_range(begin, end)
        self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def _entry(self, name: str):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SafetensorsCheckpoint:
    """A Hugging Face folder's weights: ``model.safetensors`` or shards listed in
    ``model.safetensors.index.json`` (or any single ``*.safetensors`` file given directly)."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self.path = path
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        if path.is_file():
            self._add(path)
            return
        index = path / "model.safetensors.index.json"
        single = path / "model.safetensors"
        if index.exists():
            weight_map = read_index(index)
            for shard in sorted(set(weight_map.values())):
                self._add(path / shard, shard)
            for name, shard in weight_map.items():
                if name not in self._files[shard]:
                    raise SafetensorsError(f"{index}: tensor {name!r} is listed in {shard} but not stored there")
        elif single.exists():
            self._add(single)
        else:
            shards = sorted(path.glob("*.safetensors"))
            if not shards:
                raise FileNotFoundError(f"{path}: no model.safetensors, index or *.safetensors files")
            for s in shards:
                self._add(s)

    def _add(self, file: Path, key: str | None = None) -> None:
        st = SafetensorsFile(file)
        key = key or file.name
        self._files[key] = st
        for name in st.keys():
            self._where[name] = key

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def file_of(self, name: str) -> SafetensorsFile:
        try:
            return self._files[self._where[name]]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def get(self, name: str) -> np.ndarray:
        return self.file_of(name).get(name)

    def dtype(self, name: str) -> str:
        return self.file_of(name).dtype(name)

    def ref(self, name: str) -> TensorRef:
        """See SafetensorsFile.ref."""
        return self.file_of(name).ref(name)

    def release(self, name: str) -> None:
        """See SafetensorsFile.release."""
        self.file_of(name).release(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file_of(name).shape(name)


def read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a ``model.safetensors.index.json`` (tensor name -> shard file), checked:
    an object of strings, each shard a file name inside the index's folder (an absolute path, a
    ``..`` or a sub-folder is refused, never opened)."""
    try:
        raw = index.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{index}: no such file") from None
    doc = parse_json(raw, str(index), error=SafetensorsError)
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        raise SafetensorsError(f"{index}: weight_map must be an object of tensor names to shard files, "
                               f"got {describe(weight_map)}")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise SafetensorsError(f"{index}: weight_map[{name!r}] must be a shard file name, got {describe(shard)}")
        if Path(shard).name != shard or shard in (".", ".."):
            raise SafetensorsError(f"{index}: weight_map[{name!r}] = {shard!r} is not a file in the model folder "
                                   "(shards must be plain file names beside the index)")
    return weight_map


# ---- writing ------------------------------------------------------------------------------

_WRITE_DTYPES = {"f32": ("F32", 4), "f16": ("F16", 2), "bf16": ("BF16", 2)}


def shard_names(n: int) -> list[str]:
    """Hugging Face's file names: model.safetensors, or model-0000k-of-0000n.safetensors."""
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class SafetensorsWriter:
    """Streams tensors into (sharded) safetensors files in a folder.

    The layout is fixed up front from the list of (name, dtype, shape) — dtype one of f32, f16,
    bf16 — so each file's header is written first and every tensor goes straight to its place
    as it arrives (in the listed order); nothing is held in memory. Shards are filled in order up
    to ``max_shard_bytes`` (a larger tensor gets a shard of its own). ``close()`` writes
    ``model.safetensors.index.json`` when there is more than one shard. Making the folder appear
    atomically is the caller's business (write into a temporary folder, then rename it).
    """

    def __init__(self, folder: str | os.PathLike, tensors: list[tuple[str, str, tuple[int, ...]]],
                 max_shard_bytes: int = 5_000_000_000, metadata: dict | None = None, any_order: bool = False):
        """any_order: every shard is opened with its header up front and ``write`` puts each tensor
        at its offset with pwrite, in any order and from several threads at once (shards are then
        written in parallel)."""
        self.folder = Path(folder)
        self._any_order = any_order
        self._order = [name for name, _, _ in tensors]
        if len(set(self._order)) != len(self._order):
            raise ArgumentError("SafetensorsWriter: duplicate tensor names")
        self._spec: dict[str, tuple[str, tuple[int, ...], int]] = {}
        shards: list[list[str]] = [[]]
        size = 0
        for name, dtype, shape in tensors:
            if dtype not in _WRITE_DTYPES:
                raise ArgumentError(f"SafetensorsWriter: tensor {name!r} has unsupported dtype {dtype}")
            nbytes = int(np.prod(shape, dtype=np.int64)) * _WRITE_DTYPES[dtype][1]
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
            self._spec[name] = (dtype, tuple(int(s) for s in shape), nbytes)
        self._files = shard_names(len(shards))
        self._shards = shards
        self._shard_of = {name: i for i, names in enumerate(shards) for name in names}
        self._metadata = {str(k): str(v) for k, v in (metadata or {"format": "pt"}).items()}
        self._next = 0
        self._fh = None
        self._open_shard = -1
        self.total_bytes = sum(s[2] for s in self._spec.values())
        self._fds: list[int] = []
        self._offset: dict[str, int] = {}
        if any_order:
            self._lock = threading.Lock()
            self._written: set[str] = set()
            for i, names in enumerate(self._shards):
                raw = self._header(i)
                fd = os.open(self.folder / self._files[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._fds.append(fd)
                os.write(fd, struct.pack("<Q", len(raw)) + raw)
                pos = 8 + len(raw)
                for name in names:
                    self._offset[name] = pos
                    pos += self._spec[name][2]

    @property
    def files(self) -> list[str]:
        """The file names the layout uses (model.safetensors, or the shards in order)."""
        return list(self._files)

    def _header(self, i: int) -> bytes:
        header: dict = {"__metadata__": self._metadata}
        offset = 0
        for name in self._shards[i]:
            dtype, shape, nbytes = self._spec[name]
            header[name] = {"dtype": _WRITE_DTYPES[dtype][0], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-(8 + len(raw)) % 8)  # data starts 8-byte aligned

    def _start_shard(self, i: int) -> None:
        if self._fh:
            self._fh.close()
        raw = self._header(i)
        self._fh = open(self.folder / self._files[i], "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)
        self._open_shard = i

    def write(self, name: str, array: np.ndarray) -> None:
        """Write the next tensor (in the order given to the constructor; with any_order, any listed
        tensor not written yet); bf16 as uint16."""
        if self._any_order:
            return self._write_at(name, array)
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing more"
            raise ArgumentError(f"SafetensorsWriter: got tensor {name!r}, expected {expected!r}")
        dtype, shape, nbytes = self._spec[name]
        arr = np.ascontiguousarray(array)
        if tuple(arr.shape) != shape and arr.size == int(np.prod(shape, dtype=np.int64)):
            arr = arr.reshape(shape)
        if tuple(arr.shape) != shape or arr.nbytes != nbytes:
            raise ArgumentError(f"SafetensorsWriter: tensor {name!r} has shape {list(arr.shape)} and {arr.nbytes} bytes, "
                             f"expected {list(shape)} ({dtype})")
        shard = self._shard_of[name]
        if shard != self._open_shard:
            self._start_shard(shard)
        self._fh.write(memoryview(arr).cast("B"))
        self._next += 1

    def _write_at(self, name: str, array: np.ndarray) -> None:
        if name not in self._offset:
            raise ValueError(f"SafetensorsWriter: tensor {name!r} is not in the layout")
        dtype, shape, nbytes = self._spec[name]
        arr = np.ascontiguousarray(array)
        if arr.nbytes != nbytes or arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"SafetensorsWriter: tensor {name!r} has shape {list(arr.shape)} and {arr.nbytes} bytes, "
                             f"expected {list(shape)} ({dtype})")
        with self._lock:
            if name in self._written:
                raise ValueError(f"SafetensorsWriter: tensor {name!r} written twice")
            self._written.add(name)
        view, pos, fd = memoryview(arr).cast("B"), self._offset[name], self._fds[self._shard_of[name]]
        while view.nbytes:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
        with self._lock:
            self._next += 1

    def reserve(self, name: str) -> tuple[int, int]:
        """With any_order: (descriptor, byte offset) where the listed tensor ``name``'s bytes go, for
        the caller to write there itself (pwrite, any order, any thread); it counts as written."""
        if not self._any_order:
            raise ValueError("SafetensorsWriter: reserve() needs any_order=True")
        if name not in self._offset:
            raise ValueError(f"SafetensorsWriter: tensor {name!r} is not in the layout")
        with self._lock:
            if name in self._written:
                raise ValueError(f"SafetensorsWriter: tensor {name!r} written twice")
            self._written.add(name)
            self._next += 1
        return self._fds[self._shard_of[name]], self._offset[name]

    def close(self) -> list[str]:
        """Finish the files (and the index if sharded); returns the file names written."""
        if self._any_order:
            for fd in self._fds:
                os.close(fd)
            self._fds = []
        if self._next != len(self._order):
            raise ArgumentError(f"SafetensorsWriter: only {self._next} of {len(self._order)} tensors were written")
        if self._fh:
            self._fh.close()
            self._fh = None
        if not self._order:  # no tensors at all: still a valid (empty) file
            self._start_shard(0)
            self._fh.close()
            self._fh = None
        if len(self._files) > 1:
            index = {"metadata": {"total_size": self.total_bytes},
                     "weight_map": {name: self._files[self._shard_of[name]] for name in self._order}}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return list(self._files)

    def abort(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
