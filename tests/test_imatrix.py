"""Importance matrices: ``llamix imatrix`` and llama.cpp's file formats.

Oracles: an independent float64 numpy forward pass (oracle_llama.py) on stories260K for the
statistics; the format descriptions of llama.cpp's tools/imatrix/imatrix.cpp for the files, and
llama-imatrix itself (when bench/llama_cpp_tools.py has built it) for exchanging them.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix.errors import FormatError, LlamixError
from llamix.eval.imatrix import compute_imatrix
from llamix.formats.imatrix import ImportanceMatrix, read_imatrix, write_imatrix

import oracle_llama

ROOT = Path(__file__).resolve().parents[1]
TEXT_IDS = [1] + [(37 * i + 11) % 500 + 3 for i in range(200)]  # deterministic in-vocabulary ids


@pytest.fixture(scope="module")
def s260_imatrix(s260_bin):
    m = llamix.load(s260_bin, n_ctx=64)
    return m, compute_imatrix(m, TEXT_IDS, n_ctx=64)


def test_matches_float64_numpy(s260_bin, s260_imatrix):
    m, im = s260_imatrix
    w = oracle_llama.read_llama2c(s260_bin)
    sums: dict = {}
    n_win = len(TEXT_IDS) // 64
    for i in range(n_win):
        ids = list(TEXT_IDS[i * 64:(i + 1) * 64])
        ids[0] = m.tokenizer.bos_id  # llama-imatrix starts every chunk with BOS
        taps: dict = {}
        oracle_llama.logits(w, ids, taps)
        for key, a in taps.items():
            sums[key] = sums.get(key, 0.0) + (a * a).sum(axis=0)
    assert im.chunk_count == n_win and im.chunk_size == 64
    point = {"attn_q": "attn_in", "attn_k": "attn_in", "attn_v": "attn_in", "attn_output": "attn_out",
             "ffn_gate": "ffn_in", "ffn_up": "ffn_in", "ffn_down": "down_in"}
    names = [f"blk.{l}.{t}.weight" for l in range(m.config.n_layers) for t in point]
    assert sorted(im.sums) == sorted(names)  # the output head is left out, as llama-imatrix does
    means = im.means()
    for l in range(m.config.n_layers):
        for t, p in point.items():
            name = f"blk.{l}.{t}.weight"
            assert im.counts[name].tolist() == [64.0 * n_win]
            np.testing.assert_allclose(means[name], sums[(l, p)] / (64 * n_win), rtol=2e-4, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("suffix", [".gguf", ".dat"])
def test_file_round_trip(s260_imatrix, tmp_path, suffix):
    _, im = s260_imatrix
    im.datasets = ["calib.txt"]
    path = tmp_path / f"im{suffix}"
    write_imatrix(im, path)
    back = read_imatrix(path)
    assert path.read_bytes()[:4] == (b"GGUF" if suffix == ".gguf" else struct.pack("<i", len(im.sums)))
    assert back.datasets == ["calib.txt"] and back.chunk_count == im.chunk_count
    a, b = im.means(), back.means()
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("suffix", [".gguf", ".dat"])
def test_written_file_has_the_usual_mode(s260_imatrix, tmp_path, suffix):
    """Both formats are written under a temporary name (mkstemp: mode 0600) and then get the mode
    any new file gets (0666 minus the umask), as open() would give; the .dat kept 0600."""
    _, im = s260_imatrix
    path = tmp_path / f"im{suffix}"
    umask = os.umask(0o022)
    try:
        write_imatrix(im, path)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_legacy_layout_by_hand(tmp_path):
    """A .dat written field by field as llama-imatrix's save_imatrix_legacy writes it."""
    vals = np.array([0.5, 2.0, 4.0, 8.0], np.float32)
    name = b"blk.0.ffn_down.weight"
    raw = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 3, 4) + vals.tobytes()
    raw += struct.pack("<ii", 7, 4) + b"wiki"
    (tmp_path / "a.dat").write_bytes(raw)
    im = read_imatrix(tmp_path / "a.dat")
    np.testing.assert_allclose(im.means()["blk.0.ffn_down.weight"], vals / 3)  # llama-quantize divides by ncall
    assert im.chunk_count == 7 and im.datasets == ["wiki"]
    (tmp_path / "b.dat").write_bytes(raw[:30])
    with pytest.raises(FormatError, match="b.dat"):
        read_imatrix(tmp_path / "b.dat")


def test_errors(s260_bin, tmp_path):
    m = llamix.load(s260_bin, n_ctx=64)
    with pytest.raises(LlamixError, match="at least 2 \\* n_ctx = 128"):
        compute_imatrix(m, TEXT_IDS[:100], n_ctx=64)
    with pytest.raises(LlamixError, match="exceeds the context"):
        compute_imatrix(m, TEXT_IDS, n_ctx=128)
    with pytest.raises(FormatError, match="no .in_sum2"):
        from llamix.formats.gguf import GGUFWriter
        w = GGUFWriter(tmp_path / "x.gguf")
        w.add("general.type", "imatrix")
        w.write()
        read_imatrix(tmp_path / "x.gguf")


def test_quantize_imatrix_flag_errors_name_the_flag_and_file(s260_bin, tmp_path, capsys):
    """A missing file or a folder names --imatrix (was: 'x.gguf: No such file or directory'); a
    text file says it is no importance matrix (was: 'entry 0: bad name length 2020175201')."""
    from llamix.cli import main
    out = str(tmp_path / "q.gguf")
    assert main(["quantize", str(s260_bin), out, "q4_0", "--imatrix", str(tmp_path / "none.gguf")]) == 1
    assert capsys.readouterr().err == f"llamix quantize: error: --imatrix {tmp_path / 'none.gguf'}: no such file\n"
    assert main(["quantize", str(s260_bin), out, "q4_0", "--imatrix", str(tmp_path)]) == 1
    assert "--imatrix" in capsys.readouterr().err
    (tmp_path / "calib.txt").write_text("Once upon a time, there was a little girl.\n")
    assert main(["quantize", str(s260_bin), out, "q4_0", "--imatrix", str(tmp_path / "calib.txt")]) == 1
    err = capsys.readouterr().err
    assert "calib.txt: not an importance matrix (neither GGUF nor llama.cpp's legacy .dat" in err
    assert not (tmp_path / "q.gguf").exists()
    # an importance matrix of another model: the error names the file (was: 'imatrix: entry ...')
    other = tmp_path / "other.gguf"
    write_imatrix(ImportanceMatrix(sums={"blk.0.attn_q.weight": np.ones((1, 896))},
                                   counts={"blk.0.attn_q.weight": np.ones(1)}, datasets=["x"], chunk_count=1,
                                   chunk_size=8), other)
    assert main(["quantize", str(s260_bin), out, "q4_0", "--imatrix", str(other), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llamix quantize: error: --imatrix {other}: entry 'blk.0.attn_q.weight' has 896 values "
                          "but the tensor's rows have 64 (an importance matrix of another model?)"), err
    assert not (tmp_path / "q.gguf").exists()


def test_quantize_with_imatrix_lowers_weighted_error(s260_imatrix, tmp_path):
    """Each matrix quantized with the importance matrix has a lower importance-weighted error."""
    from llamix.export import export_gguf
    from llamix.formats.gguf import GGUFReader
    from gguf import GGMLQuantizationType, quants

    m, im = s260_imatrix
    means = im.means()
    tiny = llamix.random_checkpoint("tiny", lazy=True, n_layers=2, n_heads=4, n_kv_heads=2, dim=256, hidden_dim=512)
    plain, weighted = tmp_path / "p.gguf", tmp_path / "w.gguf"
    rng = np.random.default_rng(0)
    imat = {f"blk.{l}.{t}.weight": np.exp(2 * rng.standard_normal(k)).astype(np.float32)
            for l in range(2) for t, k in [("attn_q", 256), ("ffn_up", 256), ("ffn_down", 512)]}
    tok = m.tokenizer
    export_gguf(tiny, plain, "q3_k_m", tokenizer=tok, pure=True)
    export_gguf(tiny, weighted, "q3_k_m", tokenizer=tok, pure=True, imatrix=imat)
    a, b = GGUFReader(plain), GGUFReader(weighted)
    for name, imp in imat.items():
        w = np.asarray(tiny[name] if not hasattr(tiny, "tensors") else tiny.tensors[name], np.float64)
        errs = []
        for r in (a, b):
            t = r.tensors[name]
            d = quants.dequantize(t.raw(), GGMLQuantizationType[t.type.name]).reshape(w.shape)
            errs.append(np.sum(imp * (d - w) ** 2))
        assert errs[1] < errs[0], name
    assert means  # the s260 matrix itself is exercised by the CLI test


# The CLI children import the llamix under test (site-packages once installed; the source tree has no
# compiled extension of its own).
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(llamix.__file__).parents[1]),
                                                          os.environ.get("PYTHONPATH", "")])}


def test_cli_imatrix_then_quantize(s260_bin, tmp_path, assets):
    text = tmp_path / "calib.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside. " * 20)
    out = tmp_path / "im.gguf"
    env_py = [sys.executable, "-m", "llamix"]
    r = subprocess.run(env_py + ["imatrix", "-m", str(s260_bin), "-f", str(text), "-o", str(out), "-c", "64",
                                 "--chunks", "3", "-q", "--no-ppl"], capture_output=True, text=True, cwd=tmp_path,
                       env=CHILD_ENV)   # --no-ppl: llama-imatrix's, accepted (llamix computes no perplexity)
    assert r.returncode == 0, r.stderr
    im = read_imatrix(out)
    assert im.chunk_count == 3 and im.datasets == ["calib.txt"]
    from llamix.cli import main   # llama-imatrix's --output spelling (was ambiguous: --output-file / -format)
    assert main(["imatrix", "-m", str(s260_bin), "-f", str(text), "--output", str(tmp_path / "o.gguf"), "-c", "64",
                 "--chunks", "1", "-q", "--ppl"]) == 0
    assert read_imatrix(tmp_path / "o.gguf").chunk_count == 1
    q = tmp_path / "q.gguf"
    r = subprocess.run(env_py + ["quantize", str(s260_bin), str(q), "q4_k_m", "--imatrix", str(out), "-q",
                                 "--tensor-type", "attn_v=q8_0", "--output-tensor-type", "f16"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env=CHILD_ENV)
    assert r.returncode == 0, r.stderr
    from llamix.formats.gguf import GGUFReader
    types = {n: t.type.name for n, t in GGUFReader(q).tensors.items()}
    assert types["blk.0.attn_v.weight"] == "Q8_0"


@pytest.mark.peers
def test_llama_imatrix_file_round_trip(tmp_path, s260_bin):
    """A file written by llama-imatrix reads back with the same means, and what we write from it
    reads back the same (both formats)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from llama_cpp_tools import tool

    exe = tool("llama-imatrix")
    if exe is None:
        pytest.skip("llama-imatrix is not built (bench/llama_cpp_tools.py builds it into ~/.cache/llamix-llama-cpp)")
    from llamix.export import export_gguf
    model = tmp_path / "s260.gguf"
    export_gguf(s260_bin, model, "f32")
    text = tmp_path / "calib.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside. " * 30)
    theirs = tmp_path / "theirs.gguf"
    r = subprocess.run([str(exe), "-m", str(model), "-f", str(text), "-o", str(theirs), "-c", "64", "--chunks", "4",
                        "-b", "64", "-t", "1", "--no-ppl"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    im = read_imatrix(theirs)
    assert im.chunk_size == 64 and im.chunk_count == 4 and len(im.sums) == 7 * 5
    ours = compute_imatrix(llamix.load(model, n_ctx=64), text.read_text(), 64, chunks=4)
    for name, v in im.means().items():
        np.testing.assert_allclose(ours.means()[name], v, rtol=2e-3, atol=1e-6, err_msg=name)
    for suffix in (".gguf", ".dat"):
        write_imatrix(im, tmp_path / f"again{suffix}")
        back = read_imatrix(tmp_path / f"again{suffix}").means()
        for name, v in im.means().items():
            np.testing.assert_allclose(back[name], v, rtol=1e-6, err_msg=name)


@pytest.mark.peers
def test_quantize_metadata_as_llama_quantize(tmp_path, s260_bin):
    """A quantized file keeps its source's general.* description (basename, finetune, size_label,
    license, ...) and records the importance matrix (quantize.imatrix.*) as llama-quantize does;
    both were dropped."""
    sys.path.insert(0, str(ROOT / "bench"))
    from llama_cpp_tools import tool

    exe = tool("llama-quantize")
    if exe is None:
        pytest.skip("llama-quantize is not built (bench/llama_cpp_tools.py builds it into ~/.cache/llamix-llama-cpp)")
    from llamix.cli import main
    from llamix.export import export_gguf
    from llamix.formats.gguf import GGUFReader, ValueType
    from llamix.formats.gguf_llama import MetadataEntry
    src = tmp_path / "src-f16.gguf"
    described = [MetadataEntry("general.basename", "stories", ValueType.STRING),
                 MetadataEntry("general.finetune", "tiny-chat", ValueType.STRING),
                 MetadataEntry("general.size_label", "260K", ValueType.STRING),
                 MetadataEntry("general.license", "mit", ValueType.STRING)]
    export_gguf(s260_bin, src, "f16", metadata=described, name="Stories 260K")
    text = tmp_path / "calib.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside. " * 30)
    im = tmp_path / "im.gguf"
    assert main(["imatrix", "-m", str(src), "-f", str(text), "-o", str(im), "-c", "64", "--chunks", "3", "-q"]) == 0
    theirs, ours = tmp_path / "theirs.gguf", tmp_path / "ours.gguf"
    r = subprocess.run([str(exe), "--imatrix", str(im), str(src), str(theirs), "Q4_K_M", "1"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert main(["quantize", str(src), str(ours), "q4_k_m", "--imatrix", str(im), "-q"]) == 0

    def kept(path):
        md = GGUFReader(path).metadata
        return {k: v for k, v in md.items() if k.startswith(("general.", "quantize."))}
    mine, want = kept(ours), kept(theirs)
    assert mine == want, {k: (mine.get(k), want.get(k)) for k in set(mine) | set(want) if mine.get(k) != want.get(k)}
    assert want["general.finetune"] == "tiny-chat" and want["quantize.imatrix.chunks_count"] == 3
