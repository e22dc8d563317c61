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
    res = json.loads(capsys.readouterr().out)
    assert res["pp"] > 0 and res["tg"] > 0 and res["threads"] == 1 and res["n_prompt"] == 16


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
