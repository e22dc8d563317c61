"""GGUF version 3 reading (memory-mapped) and writing (streamed, atomic).

Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

Layout (little-endian): ``"GGUF" | u32 version | u64 n_tensors | u64 n_kv``, then n_kv
key/value pairs (string key, u32 value type, value; strings are u64 length + UTF-8 bytes;
arrays are u32 element type + u64 count + items), then the tensor infos (name, u32 n_dims,
u64 ne[n_dims], u32 ggml type, u64 offset relative to the data section), padding to
``general.alignment`` (default 32), then the tensor data. ``ne[0]`` is the contiguous
dimension, so a PyTorch ``(out, in)`` weight has ``ne = [in, out]``.

Tensor types are described by a table (``TENSOR_TYPES``: ggml id -> name, block size, block
bytes); a type missing from it is refused by name, so new block formats slot in by adding a row.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ArgumentError, FormatError, check_value
from .mapped import map_whole_file

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_ARRAY_DEPTH = 16    # arrays of arrays nest at most this deep (llama.cpp's files nest none)
MAX_DIMENSION = 2**63   # ggml's ne[] are int64: a dimension must be below this


class GGUFError(FormatError):
    """A GGUF file is truncated, corrupt or holds something unsupported."""


# --- metadata value types ---------------------------------------------------------------------
class ValueType:
    UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)


# scalar value type -> struct format
_SCALAR_FMT = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}
_SCALAR_NP = {t: np.dtype(f) for t, f in _SCALAR_FMT.items()}
_TYPE_NAMES = {
    ValueType.UINT8: "uint8", ValueType.INT8: "int8", ValueType.UINT16: "uint16", ValueType.INT16: "int16",
    ValueType.UINT32: "uint32", ValueType.INT32: "int32", ValueType.FLOAT32: "float32", ValueType.BOOL: "bool",
    ValueType.STRING: "string", ValueType.ARRAY: "array", ValueType.UINT64: "uint64", ValueType.INT64: "int64",
    ValueType.FLOAT64: "float64",
}


# --- tensor types ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorType:
    name: str         # ggml's name: "Q4_0"
    ggml_id: int
    block_size: int   # elements per block
    block_bytes: int  # bytes per block

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block_size * self.block_bytes


# Every ggml type id with its geometry, so a file can always be parsed and its tensors named,
# even when llamix cannot compute with them (the model loader decides what it supports).
TENSOR_TYPES: dict[int, TensorType] = {t.ggml_id: t for t in [
    TensorType("F32", 0, 1, 4), TensorType("F16", 1, 1, 2),
    TensorType("Q4_0", 2, 32, 18), TensorType("Q4_1", 3, 32, 20),
    TensorType("Q5_0", 6, 32, 22), TensorType("Q5_1", 7, 32, 24),
    TensorType("Q8_0", 8, 32, 34), TensorType("Q8_1", 9, 32, 36),
    TensorType("Q2_K", 10, 256, 84), TensorType("Q3_K", 11, 256, 110),
    TensorType("Q4_K", 12, 256, 144), TensorType("Q5_K", 13, 256, 176),
    TensorType("Q6_K", 14, 256, 210), TensorType("Q8_K", 15, 256, 292),
    TensorType("IQ2_XXS", 16, 256, 66), TensorType("IQ2_XS", 17, 256, 74),
    TensorType("IQ3_XXS", 18, 256, 98), TensorType("IQ1_S", 19, 256, 50),
    TensorType("IQ4_NL", 20, 32, 18), TensorType("IQ3_S", 21, 256, 110),
    TensorType("IQ2_S", 22, 256, 82), TensorType("IQ4_XS", 23, 256, 136),
    TensorType("I8", 24, 1, 1), TensorType("I16", 25, 1, 2), TensorType("I32", 26, 1, 4),
    TensorType("I64", 27, 1, 8), TensorType("F64", 28, 1, 8), TensorType("IQ1_M", 29, 256, 56),
    TensorType("BF16", 30, 1, 2), TensorType("TQ1_0", 34, 256, 54), TensorType("TQ2_0", 35, 256, 66),
    TensorType("MXFP4", 39, 32, 17),
]}
TENSOR_TYPE_BY_NAME = {t.name: t for t in TENSOR_TYPES.values()}
# numpy element dtype of the plain (block size 1) types
_PLAIN_NP = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 24: np.dtype("i1"), 25: np.dtype("<i2"),
             26: np.dtype("<i4"), 27: np.dtype("<i8"), 28: np.dtype("<f8"), 30: np.dtype("<u2")}


def tensor_type(t: int | str) -> TensorType:
    """Look up a tensor type by ggml id or name (``"Q4_0"``, ``"q4_0"``)."""
    if isinstance(t, TensorType):
        return t
    if isinstance(t, str):
        try:
            return TENSOR_TYPE_BY_NAME[t.upper()]
        except KeyError:
            raise GGUFError(f"unknown GGUF tensor type {t!r}") from None
    try:
        return TENSOR_TYPES[int(t)]
    except KeyError:
        raise GGUFError(f"unknown GGUF tensor type id {t}") from None


@dataclass
class GGUFTensor:
    """One tensor of a GGUF file: its info and a zero-copy view of its bytes."""
    name: str
    type: TensorType
    shape: tuple[int, ...]   # PyTorch order (rows first): reversed ne
    offset: int              # absolute file offset of the data
    nbytes: int
    _file: "GGUFReader"

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def raw(self) -> np.ndarray:
        """The bytes as uint8, shaped (rows, bytes per row) (1-D for a 1-D tensor), no copy."""
        flat = np.frombuffer(self._file._mmap, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        if len(self.shape) <= 1:
            return flat
        return flat.reshape(math.prod(self.shape[:-1]), self.type.nbytes(self.shape[-1]))

    def array(self) -> np.ndarray:
        """Plain types (F32, F16, BF16 as uint16, integers) as a typed view in PyTorch order."""
        dt = _PLAIN_NP.get(self.type.ggml_id)
        if dt is None:
            raise GGUFError(f"{self._file.path}: tensor {self.name!r} is {self.type.name}, not a plain type; use raw()")
        flat = np.frombuffer(self._file._mmap, dtype=dt, count=self.n_elements, offset=self.offset)
        return flat.reshape(self.shape)


class _Cursor:
    """Bounds-checked little-endian parsing of the header, naming the file and field on failure."""

    def __init__(self, buf, size: int, path: Path):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(f"{self.path}: truncated while reading {what} (needs {n} bytes at offset {self.pos}, "
                            f"file has {self.size})")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what + " length")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{self.path}: {what} is not valid UTF-8") from None

    def strings(self, count: int, what: str) -> list[str]:
        """``count`` strings in a row: a vocabulary holds hundreds of thousands (tokens, merges),
        so this loop avoids the per-field helpers and checks the bounds once per string."""
        buf, size, pos = self.buf, self.size, self.pos
        out = []
        append = out.append
        from_bytes = int.from_bytes
        for i in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.take(8, f"{what}[{i}] length")
            n = from_bytes(buf[pos:pos + 8], "little")
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.take(n, f"{what}[{i}]")
            raw = buf[pos:pos + n]
            pos += n
            try:
                append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise GGUFError(f"{self.path}: {what}[{i}] is not valid UTF-8") from None
        self.pos = pos
        return out

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALAR_FMT:
            return self.unpack(_SCALAR_FMT[vtype], what)
        if vtype == ValueType.STRING:
            return self.string(what)
        if vtype == ValueType.ARRAY:
            etype = self.unpack("<I", what + " element type")
            count = self.unpack("<Q", what + " element count")
            if etype in _SCALAR_NP:  # numeric arrays: one vectorised read
                dt = _SCALAR_NP[etype]
                raw = self.take(count * dt.itemsize, f"{what} ({count} x {_TYPE_NAMES[etype]})")
                return np.frombuffer(raw, dtype=dt).copy()
            if count > self.size:
                raise GGUFError(f"{self.path}: {what} claims {count} elements, more than the file can hold")
            if etype == ValueType.STRING:
                return self.strings(count, what)
            if etype == ValueType.ARRAY:
                if depth >= MAX_ARRAY_DEPTH:
                    raise GGUFError(f"{self.path}: {what} nests arrays more than {MAX_ARRAY_DEPTH} deep (corrupt)")
                return [self.value(etype, f"{what}[{i}]", depth + 1) for i in range(count)]
            raise GGUFError(f"{self.path}: {what} has unknown array element type {etype}")
        raise GGUFError(f"{self.path}: {what} has unknown value type {vtype}")


class GGUFReader:
    """A memory-mapped GGUF file: ``.metadata`` (key -> value) and ``.tensors`` (name -> GGUFTensor).

    Arrays of numbers come back as numpy arrays, arrays of strings as lists.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._mmap, size = map_whole_file(self.path, 24, GGUFError, "to be GGUF")
        c = _Cursor(self._mmap, size, self.path)
        magic = c.take(4, "magic")
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        self.version = c.unpack("<I", "version")
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: unsupported GGUF version {self.version} (supported: 2, 3)")
        n_tensors = c.unpack("<Q", "tensor count")
        n_kv = c.unpack("<Q", "metadata count")
        if n_tensors > size or n_kv > size:
            # a count no file could hold is a corrupt header; a plausible one is a file cut short (a
            # copy or download), said with the least its entries take: a metadata key (length,
            # type, a byte) and a tensor's info (name length, dimension count, type, offset)
            if n_tensors > 1 << 24 or n_kv > 1 << 24:
                raise GGUFError(f"{self.path}: header claims {n_tensors} tensors and {n_kv} metadata entries (corrupt)")
            raise GGUFError(f"{self.path}: truncated: the file is {size} bytes, but its header's {n_tensors} tensors "
                            f"and {n_kv} metadata entries need more than {24 + 13 * n_kv + 24 * n_tensors} bytes")
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, int] = {}
        for i in range(n_kv):
            key = c.string(f"metadata key #{i}")
            vtype = c.unpack("<I", f"type of metadata {key!r}")
            self.metadata[key] = c.value(vtype, f"metadata {key!r}")
            self.value_types[key] = vtype
        infos = []
        for i in range(n_tensors):
            name = c.string(f"name of tensor #{i}")
            n_dims = c.unpack("<I", f"dimension count of tensor {name!r}")
            if n_dims > 8:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions (corrupt)")
            ne = [c.unpack("<Q", f"shape of tensor {name!r}") for _ in range(n_dims)]
            type_id = c.unpack("<I", f"type of tensor {name!r}")
            offset = c.unpack("<Q", f"data offset of tensor {name!r}")
            if type_id not in TENSOR_TYPES:
                raise GGUFError(f"{self.path}: tensor {name!r} has unknown ggml type id {type_id}")
            if any(d >= MAX_DIMENSION for d in ne):
                raise GGUFError(f"{self.path}: tensor {name!r} has a dimension of {max(ne)}, beyond ggml's int64 "
                                "dimensions (corrupt)")
            infos.append((name, ne, TENSOR_TYPES[type_id], offset))
        self.alignment = check_value(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT), int,
                                     f"{self.path}: metadata 'general.alignment'", lo=1, hi=1 << 30, error=GGUFError)
        if self.alignment & (self.alignment - 1):
            raise GGUFError(f"{self.path}: general.alignment = {self.alignment} is not a power of two")
        self.data_offset = -(-c.pos // self.alignment) * self.alignment
        self.tensors: dict[str, GGUFTensor] = {}
        for name, ne, ttype, offset in infos:
            n_el = math.prod(ne)  # Python integers: a product past 2**63 must not wrap
            if ne and ne[0] % ttype.block_size:
                raise GGUFError(f"{self.path}: tensor {name!r} ({ttype.name}) has rows of {ne[0]} elements, "
                                f"not a multiple of the block size {ttype.block_size}")
            nbytes = ttype.nbytes(n_el)
            start = self.data_offset + offset
            if offset % self.alignment:
                raise GGUFError(f"{self.path}: tensor {name!r} data offset {offset} is not aligned to {self.alignment}")
            if start + nbytes > size:
                raise GGUFError(f"{self.path}: tensor {name!r} ({ttype.name} {list(reversed(ne))}, {nbytes} bytes at "
                                f"offset {start}) extends past the end of the file ({size} bytes): truncated")
            if name in self.tensors:
                raise GGUFError(f"{self.path}: duplicate tensor name {name!r}")
            self.tensors[name] = GGUFTensor(name, ttype, tuple(int(d) for d in reversed(ne)), start, nbytes, self)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be present (GGUFError naming the file and key otherwise)."""
        if key not in self.metadata:
            raise GGUFError(f"{self.path}: required metadata key {key!r} is missing")
        return self.metadata[key]

    def tensor(self, name: str) -> GGUFTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: no tensor named {name!r}") from None

    def release_pages(self) -> None:
        """Drop the pages of the quantized tensors from this process's resident memory: they stay
        in the OS page cache and fault back in where read again (a mapped, read-only file), so a
        model whose quantized weights were repacked into their own memory does not count them
        twice. Plain (float) tensors, which the kernels read in place, are left resident."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        for t in self.tensors.values():
            if t.type.ggml_id in _PLAIN_NP or t.nbytes == 0:
                continue
            start = t.offset // page * page    # whole pages inside the file: a page shared with a
            stop = min(len(self._mmap), -(-(t.offset + t.nbytes) // page) * page)   # neighbour refaults
            self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def close(self) -> None:
        """Release the mapping (only once no tensor views are alive)."""
        self._mmap.close()


def read_header(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """``(version, tensor count, metadata count)`` from a file's first 24 bytes, or None when it
    is not a GGUF file (to tell a vocabulary-only file without parsing the rest)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        return None
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    return version, n_tensors, n_kv


# --- writing -----------------------------------------------------------------------------------
def write_replacing(path: Path, write) -> None:
    """``write(f)`` into a temporary file beside ``path``, then renamed to ``path`` (an existing file
    is replaced whole, or not at all). An OSError names ``path``, the file the caller asked for,
    not the temporary name (``out.gguf.bi1u2iez.tmp``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError) and e.errno is not None and _is_temporary_name(e.filename, path):
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def _is_temporary_name(name, path: Path) -> bool:
    """Whether an OSError's file name is none, or a temporary name beside ``path``."""
    if name is None:
        return True
    p = Path(os.fsdecode(name))
    return p.parent == path.parent and p.name.startswith(path.name + ".") and p.name.endswith(".tmp")


class GGUFWriter:
    """Writes a GGUF v3 file atomically: everything goes to a temporary name beside the target,
    which is renamed into place by :meth:`close` (or ``with`` exit) only if all went well.

    ``add(key, value, vtype=None)`` stores metadata; the value type is inferred (int -> int32 or
    int64/uint64 when out of range, float -> float32, bool, str, lists/arrays of those; numpy
    arrays keep their dtype) unless given. ``add_tensor(name, data, type, shape)`` records a tensor
    whose bytes are written later, in order, so a large model is streamed: ``data`` is a numpy
    array (plain types: its values; block types: uint8 bytes) or a zero-argument callable
    returning it when its turn comes.
    """

    def __init__(self, path: str | os.PathLike, alignment: int = DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1):
            raise ArgumentError(f"alignment must be a power of two, got {alignment}")
        self.path = Path(path)
        self.alignment = alignment
        self._kv: list[tuple[str, int, Any]] = []
        self._tensors: list[tuple[str, TensorType, tuple[int, ...], int, Any]] = []
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, ValueType.UINT32)

    def add(self, key: str, value: Any, vtype: int | None = None, element_type: int | None = None) -> None:
        if any(k == key for k, _, _ in self._kv):
            raise ArgumentError(f"metadata key {key!r} added twice")
        vtype = _infer_type(value) if vtype is None else vtype
        if vtype == ValueType.ARRAY:
            value = (element_type if element_type is not None else _infer_element_type(value), value)
        self._kv.append((key, vtype, value))

    def add_tensor(self, name: str, data, type: int | str = "F32", shape: Iterable[int] | None = None) -> None:
        """Declare a tensor. ``shape`` is in PyTorch order (rows first); defaults to the array's shape
        for plain types. Block types need ``shape`` and uint8 ``data``."""
        ttype = tensor_type(type)
        if shape is None:
            if callable(data) or ttype.block_size != 1:
                raise ArgumentError(f"tensor {name!r}: shape is required for {ttype.name} or lazily given data")
            shape = np.asarray(data).shape
        shape = tuple(int(s) for s in shape)
        if shape and shape[-1] % ttype.block_size:
            raise ArgumentError(f"tensor {name!r}: rows of {shape[-1]} elements are not a multiple of the "
                             f"{ttype.name} block size {ttype.block_size}")
        if any(t[0] == name for t in self._tensors):
            raise ArgumentError(f"tensor {name!r} added twice")
        nbytes = ttype.nbytes(int(np.prod(shape, dtype=np.int64)) if shape else 1)
        self._tensors.append((name, ttype, shape, nbytes, data))

    def write(self) -> None:
        """Write the file (temporary name, then rename)."""
        write_replacing(self.path, self._write_to)

    def _write_to(self, f) -> None:
        out = bytearray()
        out += GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self._tensors), len(self._kv))
        for key, vtype, value in self._kv:
            out += _pack_string(key) + struct.pack("<I", vtype) + _pack_value(vtype, value, key)
        offsets, offset = [], 0
        for name, ttype, shape, nbytes, _ in self._tensors:
            offsets.append(offset)
            out += _pack_string(name) + struct.pack("<I", len(shape))
            out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
            out += struct.pack("<IQ", ttype.ggml_id, offset)
            offset += -(-nbytes // self.alignment) * self.alignment
        out += b"\0" * (-len(out) % self.alignment)
        f.write(out)
        for (name, ttype, shape, nbytes, data), _ in zip(self._tensors, offsets):
            arr = np.ascontiguousarray(data() if callable(data) else data)
            if ttype.block_size == 1 and ttype.ggml_id in _PLAIN_NP and arr.dtype != np.uint8:
                want = _PLAIN_NP[ttype.ggml_id]
                if arr.dtype != want:
                    if ttype.name == "BF16":
                        raise ArgumentError(f"tensor {name!r}: BF16 data must be given as uint16 bit patterns")
                    arr = arr.astype(want)
            if arr.nbytes != nbytes:
                raise ArgumentError(f"tensor {name!r}: {ttype.name} {list(shape)} needs {nbytes} bytes, got {arr.nbytes}")
            f.write(memoryview(arr).cast("B"))
            f.write(b"\0" * (-nbytes % self.alignment))

    def close(self) -> None:
        self.write()

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.write()


def _infer_type(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL
    if isinstance(value, np.generic):
        return _NP_TO_VT[value.dtype]
    if isinstance(value, int):
        if -2**31 <= value < 2**31:
            return ValueType.INT32
        return ValueType.INT64 if value < 0 or value < 2**63 else ValueType.UINT64
    if isinstance(value, float):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return ValueType.ARRAY
    raise TypeError(f"cannot store a {type(value).__name__} in GGUF metadata")


_NP_TO_VT = {np.dtype(v): k for k, v in _SCALAR_NP.items()}


def _infer_element_type(value) -> int:
    if isinstance(value, np.ndarray):
        if value.dtype not in _NP_TO_VT:
            raise TypeError(f"cannot store a numpy array of {value.dtype} in GGUF metadata")
        return _NP_TO_VT[value.dtype]
    if not len(value):
        return ValueType.INT32
    types = {_infer_type(v) for v in value}
    if types <= {ValueType.INT32, ValueType.INT64}:
        return max(types)
    if len(types) != 1:
        raise TypeError(f"GGUF arrays hold one type; got a mix of {sorted(_TYPE_NAMES[t] for t in types)}")
    return types.pop()


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_value(vtype: int, value: Any, key: str) -> bytes:
    if vtype in _SCALAR_FMT:
        try:
            return struct.pack(_SCALAR_FMT[vtype], value)
        except struct.error as e:
            raise ArgumentError(f"metadata {key!r}: {value!r} does not fit {_TYPE_NAMES[vtype]} ({e})") from None
    if vtype == ValueType.STRING:
        return _pack_string(str(value))
    if vtype == ValueType.ARRAY:
        etype, items = value
        head = struct.pack("<IQ", etype, len(items))
        if etype in _SCALAR_NP:
            arr = np.asarray(items)
            if arr.dtype.kind in "iu" and _SCALAR_NP[etype].kind in "iu":
                info = np.iinfo(_SCALAR_NP[etype])
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise ArgumentError(f"metadata {key!r}: values do not fit {_TYPE_NAMES[etype]}")
            return head + arr.astype(_SCALAR_NP[etype]).tobytes()
        return head + b"".join(_pack_value(etype, v, f"{key}[{i}]") if etype != ValueType.ARRAY
                               else _pack_value(etype, (_infer_element_type(v), v), f"{key}[{i}]")
                               for i, v in enumerate(items))
    raise ArgumentError(f"metadata {key!r}: unknown value type {vtype}")
