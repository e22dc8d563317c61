"""Memory-mapped safetensors reading (format: https://github.com/huggingface/safetensors).

Layout: u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data.
Tensors are returned as read-only numpy views into the mapping; bf16 comes back as uint16 bit
patterns (numpy has no bfloat16).
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np

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


class SafetensorsError(ValueError):
    """A safetensors file is truncated, corrupt or holds something unsupported."""


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
                try:
                    header = json.loads(f.read(n))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise SafetensorsError(f"{self.path}: header is not valid JSON ({e})") from None
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else None
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: header is not a JSON object")
        self.metadata: dict = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_len = size - self._data_start
        self._entries: dict[str, tuple[np.dtype, str, tuple[int, ...], int, int]] = {}
        for name, e in header.items():
            try:
                dtype_name, shape, (begin, end) = e["dtype"], tuple(int(s) for s in e["shape"]), e["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{self.path}: tensor {name!r} has a malformed header entry") from None
            if dtype_name not in DTYPES:
                raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype_name}")
            np_dtype, short = DTYPES[dtype_name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
            if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} ({dtype_name} {list(shape)}) has data offsets [{begin}, {end}) "
                    f"that do not fit its size {nbytes} or the file's {data_len} data bytes (truncated?)")
            self._entries[name] = (np_dtype, short, shape, begin, end)

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

    def _entry(self, name: str):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None


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
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SafetensorsError(f"{index}: not a valid safetensors index ({e})") from None
            for shard in sorted(set(weight_map.values())):
                self._add(path / shard)
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

    def _add(self, file: Path) -> None:
        st = SafetensorsFile(file)
        self._files[file.name] = st
        for name in st.keys():
            self._where[name] = file.name

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

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file_of(name).shape(name)
