"""The inference commands: generate (a real model and the no-download random model), info, bench."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import llamix
from llamix.cli import main
from llamix.formats.llama2c import Llama2cCheckpoint


def test_generate_real_model(assets, capsys):
    rc = main(["generate", "-m", str(assets / "stories260K" / "stories260K.bin"), "Once upon a time",
               "--max-tokens", "12", "--temperature", "0"])
    assert rc == 0
    assert capsys.readouterr().out == "Once upon a time, there was a little girl named Lily. She\n"  # 12 tokens


def test_generate_takes_llama_cli_flags(s260_bin, tmp_path, capsys):
    """llama-cli's -no-cnv (accepted: generate holds no conversation), --no-display-prompt (only
    the generated text), --grammar / --grammar-file (GBNF) and -j/--json-schema (the output
    follows them however it is sampled); they were refused as unknown flags."""
    base = ["generate", "-m", str(s260_bin), "-p", "Once upon", "-n", "12", "--temp", "0"]
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert main([*base, "-no-cnv"]) == 0 and capsys.readouterr().out == plain
    assert main([*base, "--no-display-prompt"]) == 0 and "Once upon" + capsys.readouterr().out == plain
    gbnf = tmp_path / "answer.gbnf"
    gbnf.write_text('root ::= ("yes" | "no" | "maybe") "."\n')
    schema = {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]}}, "required": ["pet"],
              "additionalProperties": False}
    for seed in range(3):
        sampled = ["-p", "Once upon", "--temp", "1.0", "-s", str(seed), "--no-display-prompt"]
        for flags in (["--grammar", 'root ::= ("yes" | "no" | "maybe") "."'], ["--grammar-file", str(gbnf)]):
            assert main(["generate", "-m", str(s260_bin), *sampled, "-n", "12", *flags]) == 0
            assert capsys.readouterr().out in ("yes.\n", "no.\n", "maybe.\n")
        # room for the whitespace the grammar allows (32 characters a gap), so the JSON completes
        assert main(["generate", "-m", str(s260_bin), *sampled, "-n", "300", "-j", json.dumps(schema)]) == 0
        assert json.loads(capsys.readouterr().out) in ({"pet": "cat"}, {"pet": "dog"})
    assert main([*base, "--grammar", "root ::= ("]) == 1
    assert "--grammar" in capsys.readouterr().err


def test_generate_ignore_eos(capsys):
    """llama-cli's --ignore-eos: a sampled run that ends early at an end-of-generation token goes
    on to -n tokens (the --stats line counts the decodes: -n less the last token)."""
    import re

    def runs(*flags) -> int:
        assert main(["generate", "--random", "tiny", "Hi", "-n", "200", "--temp", "1", "--stats", *flags]) == 0
        return int(re.search(r"eval time .* / +(\d+) runs", capsys.readouterr().err).group(1))
    early = [seed for seed in range(6) if runs("-s", str(seed)) < 199]
    assert early, "no sampled run ended early: nothing to check"
    for seed in early[:2]:
        assert runs("-s", str(seed), "--ignore-eos") == 199


def test_generate_says_when_the_context_ends_it(capsys):
    """-n -1 generates until the model ends or the context is full; the latter is said (it
    stopped silently), the former is not."""
    assert main(["generate", "--random", "tiny", "Hi", "-n", "-1", "-c", "24", "--temp", "0", "--ignore-eos"]) == 0
    assert "the context is full (-c/--ctx-size 24)" in capsys.readouterr().err
    assert main(["generate", "--random", "tiny", "Hi", "-n", "4", "-c", "24", "--temp", "0"]) == 0
    assert "context is full" not in capsys.readouterr().err


def test_generate_random_needs_no_download(capsys):
    assert main(["generate", "--random", "tiny", "Hello", "--max-tokens", "8", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Hello") and "random-weight" in out.err


def test_info(assets, capsys):
    assert main(["info", str(assets / "stories260K_hf"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["config"]["n_kv_heads"] == 4 and info["model"]["tokenizer"]["vocab_size"] == 512
    assert info["cpu"]["isa"] in info["cpu"]["available_isas"]


@pytest.mark.parametrize("flag", [["--json"], ["-o", "json"]])  # llama-bench spells it -o json
def test_bench_json(capsys, flag):
    assert main(["bench", "--shape", "tiny", "-p", "16", "-n", "4", "-r", "1", "-t", "1", *flag]) == 0
    pp, tg = json.loads(capsys.readouterr().out)  # llama-bench's list: one record per test
    assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (16, 0, 0, 4)
    for r in (pp, tg):
        assert r["n_threads"] == 1 and len(r["samples_ns"]) == len(r["samples_ts"]) == 1 and r["avg_ts"] > 0
        tokens = r["n_prompt"] + r["n_gen"]
        assert r["avg_ts"] == pytest.approx(tokens * 1e9 / r["avg_ns"], rel=1e-6)


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["generate", "-m", str(tmp_path / "missing.gguf"), "hi"]) == 1
    assert "missing.gguf" in capsys.readouterr().err


def test_llama2c_version1_format(assets, tmp_path):
    """The version-1 llama2.c layout (256-byte header, norms first) loads to the same model."""
    src = assets / "stories260K" / "stories260K.bin"
    ck = Llama2cCheckpoint(src)
    c = ck.config
    header = struct.pack("<Ii7iB", 0x616B3432, 1, c["dim"], c["hidden_dim"], c["n_layers"], c["n_heads"],
                         c["n_kv_heads"], c["vocab_size"], c["seq_len"], 1).ljust(256, b"\0")
    L = c["n_layers"]
    stack = lambda t: np.stack([ck.tensors[f"blk.{i}.{t}.weight"] for i in range(L)])  # noqa: E731
    parts = [stack("attn_norm"), stack("ffn_norm"), ck.tensors["output_norm.weight"], ck.tensors["token_embd.weight"]]
    parts += [stack(t) for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up")]
    v1 = tmp_path / "v1.bin"
    v1.write_bytes(header + b"".join(np.ascontiguousarray(p, np.float32).tobytes() for p in parts))
    ids = [1, 403, 407, 261, 378]
    m = llamix.load(v1, tokenizer=assets / "stories260K" / "tok512.model")
    assert np.array_equal(m.logits(ids), llamix.load(src).logits(ids))
    v1.write_bytes(v1.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        llamix.load(v1)


@pytest.mark.peers
def test_bench_json_reads_like_llama_bench(tmp_path, s260_bin, capsys):
    """`llamix bench -o json` gives llama-bench's records: the same tests in the same order, and
    every field both print has the same JSON type; the model's size and parameter count agree."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from llama_cpp_tools import tool

    exe = tool("llama-bench")
    if exe is None:
        pytest.skip("llama-bench is not built (bench/llama_cpp_tools.py builds it into ~/.cache/llamix-llama-cpp)")
    from llamix.export import export_gguf
    model = tmp_path / "s260.gguf"
    export_gguf(s260_bin, model, "f32")
    flags = ["-p", "8,4", "-n", "2", "-r", "2", "-t", "1,2", "-d", "0,4", "-ctk", "f16", "-ctv", "f16", "-o", "json"]
    r = subprocess.run([str(exe), "-m", str(model), *flags], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = json.loads(r.stdout)
    assert main(["bench", "-m", str(model), *flags]) == 0
    ours = json.loads(capsys.readouterr().out)
    key = ("n_prompt", "n_gen", "n_depth", "n_threads", "type_k", "type_v", "model_size", "model_n_params")
    assert len(ours) == 2 * 2 * 3   # value lists: every -t x -d, each with its pp (-p 8,4) and tg tests
    assert [[x[k] for k in key] for x in ours] == [[x[k] for k in key] for x in theirs]   # and their order
    for a, b in zip(ours, theirs):
        shared = set(a) & set(b)
        assert {"avg_ts", "stddev_ts", "avg_ns", "samples_ts", "samples_ns", "test_time", "model_type"} <= shared
        for k in shared:
            assert type(a[k]) is type(b[k]) or {type(a[k]), type(b[k])} <= {int, float}, (k, a[k], b[k])
        assert len(a["samples_ns"]) == len(b["samples_ns"]) == 2
    # the default Markdown table: llama-bench's columns, rows and cells (but the speeds, the backend's
    # name and the model's label, which llama.cpp takes from its own table of model sizes)
    flags = ["-p", "8", "-n", "2", "-r", "2", "-t", "1", "-d", "0,4"]
    r = subprocess.run([str(exe), "-m", str(model), *flags], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert main(["bench", "-m", str(model), *flags, "-ctk", "f16", "-ctv", "f16"]) == 0

    def table(text):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
        return [[c for k, c in enumerate(row) if rows[0][k] not in ("model", "backend", "t/s")] for row in rows[:1] + rows[2:]]
    assert table(capsys.readouterr().out) == table(r.stdout)
    # the model column's file type is the one the file declares (general.file_type), named as
    # llama.cpp names it, not the type of the tensor holding the most bytes
    for qtype in ("q4_k_m", "iq4_xs"):
        quantized = tmp_path / f"s260.{qtype}.gguf"
        export_gguf(s260_bin, quantized, qtype)
        flags = ["-p", "8", "-n", "0", "-r", "1", "-t", "1"]
        r = subprocess.run([str(exe), "-m", str(quantized), *flags], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert main(["bench", "-m", str(quantized), *flags]) == 0
        labels = [[line.split("|")[1].strip().split(" ", 2)[2] for line in text.splitlines()[2:] if line.startswith("|")]
                  for text in (capsys.readouterr().out, r.stdout)]
        assert labels[0] == labels[1] == [{"q4_k_m": "Q4_K - Medium", "iq4_xs": "IQ4_XS - 4.25 bpw"}[qtype]], labels


@pytest.mark.peers
def test_bench_tests_from_flags_as_llama_bench(tmp_path, s260_bin, capsys):
    """A repeated flag adds its values, ranges (first-last+step, first-last*factor) expand, -pg
    adds prompt-then-generation tests and -fa takes llama-bench's 0/1: the same tests, in the same
    order, as llama-bench lists them."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from llama_cpp_tools import tool

    exe = tool("llama-bench")
    if exe is None:
        pytest.skip("llama-bench is not built (bench/llama_cpp_tools.py builds it into ~/.cache/llamix-llama-cpp)")
    from llamix.export import export_gguf
    model = tmp_path / "s260.gguf"
    export_gguf(s260_bin, model, "f32")
    for flags in (["-p", "8", "-p", "16", "-n", "0"], ["-p", "4-16*2", "-n", "1-3+2"], ["-p", "8", "-n", "0", "-fa", "1"],
                  ["-p", "4", "-n", "1", "-d", "0", "-d", "2,4"], ["-p", "4", "-n", "1", "-pg", "8,2", "-pg", "4,1"]):
        flags = [*flags, "-r", "1", "-t", "1", "-o", "jsonl"]
        r = subprocess.run([str(exe), "-m", str(model), *flags], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert main(["bench", "-m", str(model), *flags]) == 0
        key = ("n_prompt", "n_gen", "n_depth")
        tests = [[[json.loads(line)[k] for k in key] for line in text.splitlines() if line.strip()]
                 for text in (capsys.readouterr().out, r.stdout)]
        assert tests[0] == tests[1], flags
    with pytest.raises(SystemExit):
        main(["bench", "-m", str(model), "-p", "4-8*1"])   # a range that does not advance
    # -ctk / -ctv value lists: every pair, in llama-bench's order (a model whose head_dim, 64, holds
    # q8_0 blocks; llama-bench takes no f32 cache)
    import llamix
    wide = tmp_path / "tiny.gguf"
    export_gguf(llamix.random_checkpoint("tiny", lazy=True), wide, "q8_0")
    flags = ["-p", "4", "-n", "1", "-ctk", "f16,q8_0", "-ctv", "q8_0", "-ctv", "f16", "-r", "1", "-t", "1", "-o", "jsonl"]
    r = subprocess.run([str(exe), "-m", str(wide), *flags], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert main(["bench", "-m", str(wide), *flags]) == 0
    key = ("n_prompt", "n_gen", "type_k", "type_v")
    tests = [[[json.loads(line)[k] for k in key] for line in text.splitlines() if line.strip()]
             for text in (capsys.readouterr().out, r.stdout)]
    assert tests[0] == tests[1] and len(tests[0]) == 8


def test_bench_value_lists_as_llama_bench(capsys):
    """-p/-n/-d/-t take llama-bench's comma lists: one table row per test, in llama-bench's order."""
    assert main(["bench", "--shape", "tiny", "-p", "8,16", "-n", "2", "-d", "0,4", "-t", "1", "-r", "1"]) == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()]
    rows = [r[table[0].index("test")] for r in table[2:]]
    assert rows == ["pp8", "pp16", "tg2", "pp8 @ d4", "pp16 @ d4", "tg2 @ d4"]
    with pytest.raises(SystemExit) as e:
        main(["bench", "--shape", "tiny", "-p", "16,x"])
    assert e.value.code == 2 and "comma-separated list" in capsys.readouterr().err


def test_bench_cache_type_lists(s260_bin, capsys):
    """-ctk / -ctv take llama-bench's value lists (comma lists, repeatable): the tests run for every
    pair of types, each record naming its cache; a type the model cannot hold is refused before
    any test runs."""
    assert main(["bench", "--shape", "tiny", "-p", "8", "-n", "2", "-r", "1", "-t", "1", "-ctk", "f16,q8_0",
                 "-ctv", "f32", "-ctk", "Q4_0", "-o", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [(r["type_k"], r["type_v"], r["n_prompt"], r["n_gen"]) for r in records] == [
        (k, "f32", p, g) for k in ("f16", "q8_0", "q4_0") for p, g in ((8, 0), (0, 2))]
    with pytest.raises(SystemExit) as e:
        main(["bench", "--shape", "tiny", "-ctk", "f16,q9"])
    assert e.value.code == 2 and "'q9' is not one of" in capsys.readouterr().err
    assert main(["bench", "-m", str(s260_bin), "-p", "8", "-n", "0", "-r", "1", "-ctv", "f16,q8_0"]) == 1
    out, err = capsys.readouterr()
    assert "-ctv/--cache-type-v q8_0 needs head_dim to be a multiple of 32" in err and "| pp8" not in out
