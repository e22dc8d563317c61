"""One test per class of fault the fuzz campaign found: each malformed file, config, argument or
environment variable ends in a LlamixError (or OSError) whose message names the file (or the
argument) and the field, tensor or flag, quickly, and the CLI prints it as one line."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import fuzz_formats as ff
import llamix
from llamix import ArgumentError, ConfigError, FormatError, LlamixError
from llamix.cli import main

ROOT = Path(__file__).resolve().parents[2]
# where the llamix under test lives (site-packages once installed, python/ in a source tree):
# child processes import that one, never the source tree without its compiled extension
LLAMIX_HOME = str(Path(llamix.__file__).resolve().parents[1])


def _gguf(tmp_path, name="m.gguf", set_kv=(), drop=(), tensors=None) -> Path:
    kv = [e for e in ff.base_gguf_kv() if e[0] not in drop and e[0] not in {k for k, _, _ in set_kv}]
    kv += [list(e) for e in set_kv]
    ts, data = ff.base_gguf_tensors()
    path = tmp_path / name
    path.write_bytes(ff.gguf_bytes(kv, tensors(ts) if tensors else ts, data))
    return path


def _hf(tmp_path, name="hf", config=None, header=None, files=None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    base = ff.hf_folder_files(0)
    cfg = {**ff.base_hf_config(), **(config or {})}
    (folder / "config.json").write_text(json.dumps(cfg, allow_nan=True))
    if header is None:
        (folder / "model.safetensors").write_bytes(base["model.safetensors"])
    else:
        h, data = ff.st_header_and_data(ff.hf_tensors(0))
        header(h)
        (folder / "model.safetensors").write_bytes(ff.st_bytes(h, data))
    for f, raw in (files or {}).items():
        (folder / f).write_bytes(raw)
    return folder


def _raises(kind, *needles, call):
    with pytest.raises(kind) as e:
        call()
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, (n, msg)
    return msg


# --- GGUF -----------------------------------------------------------------------------------------
def test_gguf_base_loads(tmp_path):
    ck = llamix.load_checkpoint(_gguf(tmp_path))
    assert ck.config.n_layers == ff.G_LAYERS and ck.tokenizer.vocab_size == len(ff.SPM_TOKENS)


@pytest.mark.parametrize("key, vtype, value, kind", [
    ("llama.block_count", ff.STR, "32", ConfigError),
    ("llama.block_count", ff.ARR, (ff.U32, [1, 2]), ConfigError),
    ("llama.block_count", ff.F32, float("inf"), ConfigError),
    ("llama.attention.head_count", ff.U32, 0, ConfigError),
    ("llama.rope.freq_base", ff.STR, "x", ConfigError),
    ("llama.attention.layer_norm_rms_epsilon", ff.F64, float("nan"), ConfigError),
    ("tokenizer.ggml.bos_token_id", ff.U32, 2**31, ConfigError),
    ("tokenizer.ggml.tokens", ff.U32, 5, FormatError),
    ("tokenizer.ggml.tokens", ff.STR, "abc", FormatError),
    ("general.alignment", ff.STR, "32", FormatError),
    ("general.alignment", ff.F32, float("inf"), FormatError),
    ("general.alignment", ff.U32, 3, FormatError),
    ("llama.embedding_length", ff.ARR, ff.Deep(2000), FormatError),
])
def test_gguf_metadata_of_the_wrong_type_or_range(tmp_path, key, vtype, value, kind):
    path = _gguf(tmp_path, set_kv=[(key, vtype, value)])
    _raises(kind, path, key, call=lambda: llamix.load_checkpoint(path))


def test_gguf_head_count_zero_in_info_is_one_line(tmp_path, capsys):
    path = _gguf(tmp_path, set_kv=[("llama.attention.head_count", ff.U32, 0)])
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "head_count" in err and "Traceback" not in err


def test_gguf_huge_layer_count_is_refused_at_once(tmp_path):
    for n in (2**31 - 1, 99_999):
        path = _gguf(tmp_path, name=f"l{n}.gguf", set_kv=[("llama.block_count", ff.U32, n)])
        t = time.perf_counter()
        _raises(LlamixError, path, "block_count", call=lambda: llamix.load_checkpoint(path))
        assert time.perf_counter() - t < 2


def test_gguf_dimension_past_int64_is_refused(tmp_path):
    def widen(ts):
        ts[0][1] = [2**63, 1]  # element count 2**63: wraps negative in int64 arithmetic
        return ts
    path = _gguf(tmp_path, tensors=widen)
    _raises(FormatError, path, "token_embd.weight", call=lambda: llamix.load_checkpoint(path))


def test_text_file_named_gguf(tmp_path, capsys):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, long enough to be read as a header\n")
    _raises(FormatError, path, "not a GGUF file: bad magic", call=lambda: llamix.load_checkpoint(path))
    assert main(["info", str(path)]) == 1
    assert "not a GGUF file: bad magic" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_file_of_a_folder_points_at_the_folder(tmp_path, name, capsys):
    path = tmp_path / name
    path.write_text('{"dim": 2288, "just": "a part of a Hugging Face folder"}\n')
    _raises(FormatError, path, "pass the folder holding config.json", call=lambda: llamix.load_checkpoint(path))
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "pass the folder holding config.json" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["notes.txt", "tok512.model"])
def test_a_file_outside_a_model_folder_is_not_sent_to_its_folder(tmp_path, name, capsys):
    """A text file, or a llama2.c folder's tokenizer, in a folder without config.json: pointing at
    that folder ("pass the folder holding config.json") only led to "no config.json" next."""
    path = tmp_path / name
    path.write_text("some notes, not a model at all\n")
    _raises(FormatError, path, "is not a model", call=lambda: llamix.load_checkpoint(path))
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "is not a model" in err and "config.json" not in err and err.count("\n") == 1
    (tmp_path / "config.json").write_text("{}")   # beside a config.json it is a part of that folder
    _raises(FormatError, path, "pass the folder holding config.json", call=lambda: llamix.load_checkpoint(path))


def test_neither_gguf_nor_llama2c(tmp_path):
    path = tmp_path / "weights.dat"
    path.write_bytes(b"\x00\x01" * 64)
    _raises(FormatError, path, "neither a GGUF file", call=lambda: llamix.load_checkpoint(path))


# --- safetensors and Hugging Face folders -----------------------------------------------------------
E = "model.embed_tokens.weight"


@pytest.mark.parametrize("edit, needle", [
    (lambda h: h[E].update(shape=[2**63, 1]), "shape"),
    (lambda h: h[E].update(shape=[-16, -16]), "shape"),          # a product that matches
    (lambda h: h[E].update(data_offsets="0, 1024"), "data_offsets"),
    (lambda h: h[E].update(data_offsets=None), "data_offsets"),
    (lambda h: h[E].update(data_offsets=[0.0, 1024.0]), "data_offsets"),
    (lambda h: h[E].update(dtype=["F32"]), "dtype"),
    (lambda h: h[E].pop("shape"), "shape"),
    (lambda h: h.update({E: 7}), E),
    (lambda h: h.update({"__metadata__": [1, 2]}), "__metadata__"),
])
def test_safetensors_header_values(tmp_path, edit, needle):
    folder = _hf(tmp_path, header=edit)
    _raises(FormatError, folder / "model.safetensors", needle, call=lambda: llamix.load_checkpoint(folder))


def test_safetensors_header_nested_deep_or_not_utf8(tmp_path):
    for i, raw in enumerate((b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"\xff\xfe": 1}', b"[1, 2]")):
        folder = tmp_path / f"f{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(ff.base_hf_config()))
        (folder / "model.safetensors").write_bytes(ff.st_bytes(None, b"", raw_header=raw))
        _raises(FormatError, folder / "model.safetensors", "header", call=lambda: llamix.load_checkpoint(folder))


@pytest.mark.parametrize("raw, needle", [
    (b'{"model_type": "llama", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    (b'{"model_type": "ll\xffama"}', "not UTF-8"),
    (b'["llama"]', "JSON object"),
    (b'{"model_type": "llama",', "invalid JSON"),
])
def test_config_json_that_is_not_a_json_object(tmp_path, raw, needle):
    folder = _hf(tmp_path, files={"config.json": raw})
    _raises(FormatError, folder / "config.json", needle, call=lambda: llamix.load_checkpoint(folder))


@pytest.mark.parametrize("change, field", [
    ({"rope_theta": "10000"}, "rope_theta"), ({"rope_theta": float("inf")}, "rope_theta"),
    ({"rope_scaling": [1, 2]}, "rope_scaling"), ({"rope_scaling": {"rope_type": "linear", "factor": None}}, "factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "factor"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 2.0}},
     "low_freq_factor"),
    ({"intermediate_size": "24"}, "intermediate_size"), ({"intermediate_size": 1e30}, "intermediate_size"),
    ({"num_attention_heads": 0}, "num_attention_heads"), ({"hidden_size": True}, "hidden_size"),
    ({"num_hidden_layers": 10**7}, "num_hidden_layers"), ({"eos_token_id": [2**40]}, "eos_token_id"),
    ({"tie_word_embeddings": "no"}, "tie_word_embeddings"), ({"head_dim": 3}, "head_dim"),
])
def test_config_json_values(tmp_path, change, field, capsys):
    folder = _hf(tmp_path, config=change)
    t = time.perf_counter()
    _raises(ConfigError, folder / "config.json", field, call=lambda: llamix.load_checkpoint(folder))
    assert time.perf_counter() - t < 2
    assert main(["info", str(folder)]) == 1  # info refuses it the same way, not only the load
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err


def test_layer_count_checked_against_the_tensors(tmp_path):
    folder = _hf(tmp_path, config={"num_hidden_layers": 3})
    _raises(FormatError, "num_hidden_layers = 3", "layers 0..1", call=lambda: llamix.load_checkpoint(folder))


@pytest.mark.parametrize("weight_map, needle", [
    (None, "weight_map"), (["a"], "weight_map"), ({E: 3}, E),
    ({E: "/etc/hostname"}, "not a file in the model folder"),
    ({E: "../outside.safetensors"}, "not a file in the model folder"),
    ({E: "sub/model.safetensors"}, "not a file in the model folder"),
])
def test_shard_index(tmp_path, weight_map, needle):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(ff.hf_folder_files(0)["model.safetensors"])
    folder = _hf(tmp_path)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _raises(FormatError, folder / "model.safetensors.index.json", needle,
            call=lambda: llamix.load_checkpoint(folder))


# --- tokenizer files and llama2.c -------------------------------------------------------------------
def test_sentencepiece_model_with_corrupt_pieces(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(ff.spm_model_bytes(8, placeholder=True).replace(ff.PLACEHOLDER.encode(), b"\xff\xfe\xfd\xfc"))
    _raises(FormatError, path, "not valid UTF-8", call=lambda: llamix.Tokenizer.from_file(path))


@pytest.mark.parametrize("size", [28, 30, 36, 255])
def test_llama2c_v1_magic_in_a_short_file(tmp_path, size):
    path = tmp_path / "m.bin"
    path.write_bytes(ff.l2c_bytes(ff.L2C_BASE, 1, 0)[:size])
    _raises(FormatError, path, "truncated", call=lambda: llamix.load_checkpoint(path))


def test_llama2c_vocabulary_larger_than_its_tokenizer(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(ff.l2c_bytes(ff.L2C_BASE, 1, ff.l2c_floats(ff.L2C_BASE, 1)))
    (tmp_path / "tokenizer.model").write_bytes(ff.spm_model_bytes(8))
    _raises(FormatError, path, "vocab_size 16", "8 pieces", call=lambda: llamix.load_checkpoint(path))


# --- merge configs -------------------------------------------------------------------------------------
@pytest.fixture
def merge_dir(tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        d = tmp_path / name
        d.mkdir()
        for f, raw in ff.hf_folder_files(seed).items():
            (d / f).write_bytes(raw)
    (tmp_path / "g.gguf").write_bytes(ff.base_gguf())
    return tmp_path


def _merge_yaml(folder: Path, text: str) -> Path:
    path = folder / "merge.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("params, field", [
    ("density: .nan", "density"), ("density: -9223372036854775808", "density"), ("weight: .inf", "weight"),
    ("density: 1.5", "density"),
])
def test_merge_parameters_nan_inf_and_range(merge_dir, params, field):
    cfg = _merge_yaml(merge_dir, f"merge_method: ties\nbase_model: a\nmodels:\n  - model: b\n    parameters:\n"
                                 f"      weight: 1.0\n      {params}\n")
    _raises(ConfigError, cfg, field, call=lambda: llamix.merge(cfg, merge_dir / "out"))
    assert not (merge_dir / "out").exists()


def test_merge_gamma_inf(merge_dir):
    cfg = _merge_yaml(merge_dir, "merge_method: breadcrumbs\nbase_model: a\nparameters:\n  gamma: .inf\n"
                                 "models:\n  - model: b\n    parameters: {weight: 1.0}\n")
    _raises(ConfigError, cfg, "gamma", call=lambda: llamix.merge(cfg, merge_dir / "out"))


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic", "breadcrumbs", "della"])
def test_merge_with_only_the_base_model(merge_dir, method):
    cfg = _merge_yaml(merge_dir, f"merge_method: {method}\nbase_model: a\nmodels:\n  - model: a\n")
    _raises(ConfigError, cfg, "besides the base", call=lambda: llamix.merge(cfg, merge_dir / "out"))


def test_merge_yaml_nested_invalid_not_utf8(merge_dir):
    for text, needle in ((b"merge_method: linear\nmodels: " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
                         (b"merge_method: [linear\n", "line 1"), (b"merge_method: linear\n# \xff\n", "not UTF-8")):
        cfg = merge_dir / "bad.yml"
        cfg.write_bytes(text)
        msg = _raises(ConfigError, cfg, needle, call=lambda: llamix.merge(cfg, merge_dir / "out"))
        assert "<unicode string>" not in msg


def test_merge_refuses_gguf_inputs(merge_dir, capsys):
    cfg = _merge_yaml(merge_dir, "merge_method: linear\nmodels:\n  - model: g.gguf\n    parameters: {weight: 1}\n"
                                 "  - model: a\n    parameters: {weight: 1}\n")
    _raises(ConfigError, cfg, "merge takes Hugging Face folders", call=lambda: llamix.merge(cfg, merge_dir / "o"))
    assert main(["merge", str(cfg), str(merge_dir / "o")]) == 1
    err = capsys.readouterr().err
    assert "merge takes Hugging Face folders" in err and err.count("\n") == 1


# --- tokenizer input --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    ck = llamix.random_checkpoint("tiny", "q8_0", dim=64, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64)
    return llamix.Model(ck, n_ctx=64)


@pytest.fixture(scope="module")
def bpe():
    byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
        [chr(c) for c in range(174, 256)] + [chr(256 + i) for i in range(68)]
    tokens = byte_chars + ["\u0120t", "he", "<|endoftext|>"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": ["\u0120 t", "h e"]}
    return llamix.Tokenizer.from_gguf_metadata(meta, source="bpe")


def test_lone_surrogates_and_bad_bytes_in_text(model, bpe):
    for tok in (model.tokenizer, bpe):
        _raises(ArgumentError, "text", "U+DCFF", "position 3", call=lambda: tok.encode("abc\udcff"))
        _raises(ArgumentError, "text", "not valid UTF-8", call=lambda: tok.encode(b"ab\xff"))
        assert tok.encode(b"abc", add_special=False) == tok.encode("abc", add_special=False)
    _raises(ArgumentError, "U+DCFF", call=lambda: model.tokenize("abc\udcff"))
    _raises(ArgumentError, "U+DCFF", call=lambda: model.generate("abc\udcff", max_tokens=1))


@pytest.mark.parametrize("ids, needle", [
    ("hello", "sequence of integer token ids"), ([1.9, 2.2], "ids[0] must be an integer"),
    ([1, [2]], "ids[1]"), ([True], "ids[0]"), (3, "sequence"), ([2**63], "outside the vocabulary"),
    (np.array([1.0]), "integer token ids"),
])
def test_token_ids_are_integers(model, bpe, ids, needle):
    for call in (model.detokenize, model.tokenizer.decode, bpe.decode):
        _raises(ArgumentError, needle, call=lambda: call(ids))
    assert model.detokenize(np.array([5, 6])) == model.detokenize([5, 6])


def test_tokenize_takes_one_text(model):
    _raises(ArgumentError, "text must be a str", call=lambda: model.tokenize(["Once", "upon"]))
    _raises(ArgumentError, "prompt[0]", call=lambda: model.generate([1.5, 2.5], max_tokens=1))
    _raises(ArgumentError, "tokens[0]", call=lambda: model.eval([0.5]))


def test_cli_argument_that_is_not_utf8(tmp_path):
    path = _gguf(tmp_path)
    r = subprocess.run([sys.executable, "-m", "llamix", "generate", "-m", str(path), "-p", b"ab\xffc", "-n", "1"],
                       capture_output=True, env={**os.environ, "PYTHONPATH": LLAMIX_HOME})
    err = r.stderr.decode()
    assert r.returncode == 1 and "-p/--prompt" in err and err.count("\n") == 1, err


# --- QuantizedTensor.from_bytes ---------------------------------------------------------------------------
@pytest.mark.parametrize("data, shape, needle", [
    (bytes(34), (-1, 32), "rows"), (bytes(0), (0, -32), "k must be"), (bytes(34), (1, 1, 32), "(rows, k)"),
    (bytes(34), (1, 2**63), "k must be"), (bytes(0), (0, 2**63), "k must be"), (bytes(34), "x", "(rows, k)"),
    (np.zeros(68, np.uint8)[::2], (1, 32), "C-contiguous"), (bytes(34), (1, 31), "block size"),
    (bytes(33), (1, 32), "needs 34 bytes"), (bytes(34), (True, 32), "rows"),
])
def test_from_bytes(data, shape, needle):
    _raises(ArgumentError, needle, call=lambda: llamix.QuantizedTensor.from_bytes(data, "q8_0", shape))


# --- messages name the file ------------------------------------------------------------------------------
def test_model_config_errors_name_the_file(tmp_path):
    folder = _hf(tmp_path, config={"head_dim": 3})
    msg = _raises(ConfigError, call=lambda: llamix.load_checkpoint(folder))
    assert msg.startswith(str(folder / "config.json")) and not msg.startswith("config:")


# --- the CLI's files and outputs ----------------------------------------------------------------------------
def test_text_files_missing_or_binary(tmp_path, capsys):
    model = _gguf(tmp_path)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\xff\xfe text")
    for argv, needle in ((["generate", "-m", str(model), "-f", str(tmp_path / "none.txt")], "none.txt: no such file"),
                         (["generate", "-m", str(model), "-f", str(binary)], "b.txt: not UTF-8 text"),
                         (["perplexity", "-m", str(model), "-f", str(binary)], "b.txt: not UTF-8 text"),
                         (["generate", "-m", str(model), "-f", str(tmp_path)], "is a folder")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Errno" not in err, err


def test_quantize_output_rule(tmp_path, capsys):
    src = _gguf(tmp_path, "src.gguf")
    out = tmp_path / "out.gguf"
    rq = "--allow-requantize"
    assert main(["quantize", str(src), str(out), "f16", rq]) == 0
    before = out.read_bytes()
    assert main(["quantize", str(src), str(out), "f32", rq]) == 1
    assert "already exists (pass --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["quantize", str(src), str(out), "f32", rq, "--force"]) == 0 and out.read_bytes() != before
    assert main(["quantize", str(src), str(src), "f16", rq, "--force"]) == 1  # never onto an input
    assert "is or holds an input" in capsys.readouterr().err


def test_requantize_needs_the_flag(tmp_path, capsys):
    src = _gguf(tmp_path, "src.gguf")  # Q8_0 matrices
    assert main(["quantize", str(src), str(tmp_path / "q4.gguf"), "q4_0"]) == 1
    err = capsys.readouterr().err
    assert "Q8_0 already" in err and "--allow-requantize" in err and err.count("\n") == 1
    assert main(["quantize", str(src), str(tmp_path / "q4.gguf"), "q4_0", "--allow-requantize"]) == 0
    capsys.readouterr()
    assert main(["quantize", str(src), str(tmp_path / "same.gguf"), "q8_0"]) == 0  # nothing to requantize


def test_k_quant_fallbacks_are_reported(tmp_path, capsys):
    src = _gguf(tmp_path, "src.gguf")  # rows of 32: no K-quant block fits
    assert main(["quantize", str(src), str(tmp_path / "k.gguf"), "q4_k_m", "--allow-requantize"]) == 0
    out = capsys.readouterr().out
    assert "tensors fell back" in out and "Q4_K -> " in out


def test_merge_output_rule(merge_dir, capsys):
    cfg = _merge_yaml(merge_dir, "merge_method: linear\ndtype: float32\nmodels:\n  - model: a\n"
                                 "    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\n")
    out = merge_dir / "out"
    assert main(["merge", str(cfg), str(out), "-q"]) == 0
    (out / "marker").write_text("old")
    assert main(["merge", str(cfg), str(out), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err and (out / "marker").exists()
    assert main(["merge", str(cfg), str(out), "-q", "--force"]) == 0 and not (out / "marker").exists()
    assert (out / "model.safetensors").is_file()
    assert main(["merge", str(cfg), str(merge_dir / "a"), "--force"]) == 1  # an input folder
    assert main(["merge", str(cfg), str(merge_dir), "--force"]) == 1        # a folder holding the inputs
    assert capsys.readouterr().err.count("is or holds an input") == 2


def test_ctx_size_beyond_training_context_warns(tmp_path, capsys):
    model = _gguf(tmp_path)  # context_length 64
    assert main(["generate", "-m", str(model), "-p", "ab", "-n", "1", "-c", "128", "--temp", "0"]) == 0
    assert "beyond the model's training context (64)" in capsys.readouterr().err


@pytest.mark.parametrize("env, needle", [({"LLAMIX_ISA": "neon"}, "LLAMIX_ISA=neon"),
                                         ({"LLAMIX_ISA": "sse9"}, "LLAMIX_ISA=sse9"),
                                         ({"LLAMIX_THREADS": "abc"}, "LLAMIX_THREADS=abc"),
                                         ({"LLAMIX_THREADS": "-2"}, "LLAMIX_THREADS=-2"),
                                         ({"LLAMIX_THREADS": "100000"}, "LLAMIX_THREADS=100000")])
def test_environment_variables(env, needle):
    if env.get("LLAMIX_ISA") == "neon" and "neon" in llamix.cpu_info()["available_isas"]:
        pytest.skip("this CPU runs neon")
    run_env = {**os.environ, "PYTHONPATH": LLAMIX_HOME, **env}
    code = "import llamix\ntry:\n    llamix.cpu_info()\nexcept llamix.ArgumentError as e:\n    print('refused:', e)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env)
    assert r.returncode == 0 and r.stdout.startswith("refused: " + needle), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "llamix", "info"], capture_output=True, text=True, env=run_env)
    assert r.returncode == 1 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_one_error_type():
    for cls in (FormatError, ConfigError, ArgumentError):
        assert issubclass(cls, LlamixError) and issubclass(cls, ValueError)
    from llamix.commands.common import UsageError
    from llamix.formats.gguf import GGUFError
    from llamix.formats.llama2c import Llama2cError
    from llamix.formats.safetensors import SafetensorsError
    assert llamix.merge.ConfigError is ConfigError and issubclass(UsageError, ArgumentError)
    assert all(issubclass(c, FormatError) for c in (GGUFError, SafetensorsError, Llama2cError))
