"""GGUF v3: our writer -> our reader and the `gguf` package's reader (an independent
implementation of the spec), every metadata type, alignment, block tensors, and clear errors for
truncated or corrupt files."""
from __future__ import annotations

import os

import numpy as np
import pytest

import llamix
from llamix.formats.gguf import GGUFError, GGUFReader, GGUFWriter, ValueType

META = {
    "general.architecture": "llama",
    "general.name": "tëst ✓",
    "u8": (7, ValueType.UINT8), "i8": (-7, ValueType.INT8), "u16": (65535, ValueType.UINT16),
    "i16": (-300, ValueType.INT16), "u32": (4_000_000_000, ValueType.UINT32), "i32": -5,
    "f32": 1.5, "bool": True, "u64": (2**63 + 5, ValueType.UINT64), "i64": -(2**40), "f64": (0.1, ValueType.FLOAT64),
    "arr.str": ["a", "", "▁b"], "arr.i32": [1, -2, 3], "arr.f32": np.array([0.5, -1.25], dtype=np.float32),
    "arr.u8": np.arange(5, dtype=np.uint8), "arr.nested": [[1, 2], [3]], "arr.empty": [],
}


def _write(path, alignment=32):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal(7).astype(np.float16)
    q4 = llamix.quantize(rng.standard_normal((4, 64)).astype(np.float32), "q4_0")
    q8 = llamix.quantize(rng.standard_normal((2, 96)).astype(np.float32), "q8_0")
    w = GGUFWriter(path, alignment=alignment)
    for k, v in META.items():
        if isinstance(v, tuple):
            w.add(k, v[0], v[1])
        else:
            w.add(k, v)
    w.add_tensor("f32", f32)
    w.add_tensor("f16", f16, "F16")
    w.add_tensor("q4", q4.data, "Q4_0", q4.shape)
    w.add_tensor("q8", lambda: q8.data, "Q8_0", q8.shape)  # streamed
    w.write()
    return f32, f16, q4, q8


@pytest.mark.parametrize("alignment", [32, 64])
def test_round_trip_our_reader(tmp_path, alignment):
    p = tmp_path / "t.gguf"
    f32, f16, q4, q8 = _write(p, alignment)
    r = GGUFReader(p)
    for k, v in META.items():
        v = v[0] if isinstance(v, tuple) else v
        got = r.metadata[k]
        if k == "arr.nested":
            assert [list(x) for x in got] == v
        elif isinstance(v, float):
            assert got == pytest.approx(v)
        elif isinstance(v, (list, np.ndarray)):
            assert list(np.asarray(got).tolist()) == list(np.asarray(v).tolist())
        else:
            assert got == v and type(got) is type(v)
    assert r.alignment == alignment
    assert np.array_equal(r.tensor("f32").array(), f32)
    assert np.array_equal(r.tensor("f16").array(), f16)
    assert np.array_equal(r.tensor("q4").raw(), q4.data) and r.tensor("q4").shape == (4, 64)
    assert np.array_equal(r.tensor("q8").raw(), q8.data) and r.tensor("q8").type.name == "Q8_0"
    for t in r.tensors.values():
        assert (t.offset - r.data_offset) % alignment == 0


def test_round_trip_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "t.gguf"
    f32, f16, q4, q8 = _write(p)
    r = gguf.GGUFReader(str(p))
    fields = r.fields
    assert fields["general.name"].contents() == "tëst ✓"
    assert fields["u32"].contents() == 4_000_000_000 and fields["i64"].contents() == -(2**40)
    assert fields["u64"].contents() == 2**63 + 5
    assert fields["arr.str"].contents() == ["a", "", "▁b"]
    assert fields["arr.i32"].contents() == [1, -2, 3]
    tensors = {t.name: t for t in r.tensors}
    assert np.array_equal(np.asarray(tensors["f32"].data), f32)
    assert np.array_equal(np.asarray(tensors["q4"].data).reshape(-1), q4.data.reshape(-1))
    deq = gguf.quants.dequantize(np.asarray(tensors["q8"].data), gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(deq.reshape(q8.shape), q8.dequantize())


def test_reads_gguf_package_output(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "g.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_uint32("x.count", 3)
    w.add_array("x.list", ["p", "q"])
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.add_tensor("t", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = GGUFReader(p)
    assert r.metadata["general.architecture"] == "llama" and r.metadata["x.count"] == 3
    assert r.metadata["x.list"] == ["p", "q"]
    assert np.array_equal(r.tensor("t").array(), arr)


def test_truncated_and_corrupt_files_name_file_and_field(tmp_path):
    p = tmp_path / "t.gguf"
    _write(p)
    data = p.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-40])
    with pytest.raises(GGUFError, match=r"cut\.gguf.*tensor 'q8'.*truncated"):
        GGUFReader(cut)
    cut.write_bytes(data[:60])
    with pytest.raises(GGUFError, match=r"cut\.gguf: truncated while reading metadata"):
        GGUFReader(cut)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + data[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFReader(bad)
    bad.write_bytes(data[:4] + (99).to_bytes(4, "little") + data[8:])
    with pytest.raises(GGUFError, match="version 99"):
        GGUFReader(bad)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        GGUFReader(tmp_path / "missing.gguf")


def test_writer_is_atomic(tmp_path):
    p = tmp_path / "t.gguf"
    w = GGUFWriter(p)
    w.add_tensor("a", np.zeros(4, np.float32))
    w.add_tensor("b", lambda: np.zeros(3, np.float32), "F32", (5,))  # wrong size -> error mid-write
    with pytest.raises(ValueError, match="'b'"):
        w.write()
    assert not p.exists() and os.listdir(tmp_path) == []


def test_writer_rejects_bad_values(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="does not fit"):
        w.add("k", 300, ValueType.UINT8)
        w.write()
    w = GGUFWriter(tmp_path / "y.gguf")
    with pytest.raises(ValueError, match="block size"):
        w.add_tensor("q", np.zeros((2, 18), np.uint8), "Q4_0", (2, 33))


def test_a_file_cut_short_after_its_header_is_called_truncated(tmp_path):
    """A download cut to 100 bytes of a model with many tensors: its header's counts need more
    bytes than the file has, which is a truncated file, not a corrupt header (was: 'header claims
    120 tensors and 1 metadata entries (corrupt)'); absurd counts still say corrupt."""
    p = tmp_path / "many.gguf"
    w = GGUFWriter(p)
    w.add("general.architecture", "llama")
    for i in range(120):
        w.add_tensor(f"t{i}", np.zeros(4, np.float32))
    w.write()
    data = p.read_bytes()
    p.write_bytes(data[:100])
    with pytest.raises(GGUFError, match=r"many\.gguf: truncated: the file is 100 bytes, but its header's 120 tensors "
                                        r"and 1 metadata entries need more than \d+ bytes"):
        GGUFReader(p)
    p.write_bytes(data[:16] + (2**60).to_bytes(8, "little") + data[24:100])
    with pytest.raises(GGUFError, match="corrupt"):
        GGUFReader(p)
