"""llamix extract-lora: the adapter it writes, applied to the base (by llamix's model+lora path and
by peft), reproduces the fine-tune within the relative truncation error it reports per tensor;
at full rank the fine-tune comes back exactly (to float32 rounding)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llamix
from llamix.cli import main as cli_main
from llamix.merge.extract_lora import extract_lora, truncated_svd

from conftest import require_peer
from helpers import perturbed, read_model, tiny_tensors, write_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_pair")
    base = tiny_tensors(5)
    rng = np.random.default_rng(9)
    ft = perturbed(base, 7, 0.01)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):  # low-rank updates
        u, v = rng.standard_normal((ft[name].shape[0], 2)), rng.standard_normal((2, ft[name].shape[1]))
        ft[name] = (base[name] + 0.3 * u @ v).astype(np.float32)
    ft["model.norm.weight"] = base["model.norm.weight"].copy()  # unchanged: left out
    return write_model(root / "base", base), write_model(root / "ft", ft), base, ft


def frob_rel(a, b, d):
    return np.linalg.norm(a - b) / np.linalg.norm(d)


@pytest.mark.parametrize("rank", [2, 6, 16])
def test_adapter_reproduces_the_finetune_within_the_reported_error(tmp_path, pair, rank):
    base_dir, ft_dir, base, ft = pair
    report = extract_lora(str(base_dir), str(ft_dir), tmp_path / "lora", rank, out_dtype="float32")
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == rank and cfg["lora_alpha"] == rank
    assert "model.norm.weight" not in {t.name for t in report.tensors}
    merged = read_model(llamix.merge({"merge_method": "passthrough", "dtype": "float32",
                                      "models": [{"model": f"{base_dir}+{tmp_path / 'lora'}"}]}, tmp_path / "m",
                                     progress=False))
    errors = {t.name: t for t in report.tensors}
    for name, w in ft.items():
        t = errors.get(name)
        if t is None:
            np.testing.assert_array_equal(merged[name], base[name])
        elif t.kind == "full":
            np.testing.assert_array_equal(merged[name], w)
        else:
            d = w.astype(np.float64) - base[name]
            got = frob_rel(merged[name], w.astype(np.float64), d)
            assert abs(got - t.rel_error) <= 1e-4 + 1e-3 * t.rel_error, (name, got, t.rel_error)
            if name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
                assert t.rel_error < 0.2  # rank-2 update plus small noise: captured
            if rank >= min(w.shape):
                assert t.rel_error < 1e-5


def test_randomized_svd_is_near_the_best_rank_r():
    rng = np.random.default_rng(0)
    d = (rng.standard_normal((300, 40)) @ np.diag(np.linspace(3, 0.01, 40)) @ rng.standard_normal((40, 200))).astype(np.float32)
    u, s, vt = truncated_svd(d, 8)
    best = np.linalg.svd(d.astype(np.float64), compute_uv=False)
    got = np.linalg.norm(d - (u * s) @ vt)
    assert got <= 1.01 * np.sqrt(np.sum(best[8:] ** 2))


@pytest.mark.peers
def test_peft_loads_the_adapter(tmp_path, pair):
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    peft = require_peer("peft")
    base_dir, ft_dir, base, ft = pair
    report = extract_lora(str(base_dir), str(ft_dir), tmp_path / "lora", 4)
    m = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(m, str(tmp_path / "lora")).merge_and_unload()
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in merged.state_dict().items()}
    for t in report.tensors:
        want = ft[t.name].astype(np.float64)
        if t.kind == "full":
            np.testing.assert_allclose(sd[t.name], want, rtol=1e-6)
        else:
            got = frob_rel(sd[t.name], want, want - base[t.name])
            assert abs(got - t.rel_error) <= 1e-4 + 1e-3 * t.rel_error, (t.name, got, t.rel_error)


def test_cli(tmp_path, pair, capsys):
    base_dir, ft_dir, _, _ = pair
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "3",
                     str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "largest relative truncation error" in out.out and "relative error" in out.err
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "3",
                     str(tmp_path / "out")]) == 1  # exists: refused


def test_cli_takes_mergekit_extract_lora_spelling(tmp_path, pair, capsys):
    """mergekit-extract-lora --model FT --base-model BASE --out-path OUT --max-rank R: the same
    adapter as llamix's spelling (--base-model and --out-path were refused as unknown)."""
    base_dir, ft_dir, _, _ = pair
    assert cli_main(["extract-lora", "--model", str(ft_dir), "--base-model", str(base_dir),
                     "--out-path", str(tmp_path / "mk"), "--max-rank", "3", "-q"]) == 0
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "3", "-q",
                     str(tmp_path / "ours")]) == 0
    a = (tmp_path / "mk" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "ours" / "adapter_model.safetensors").read_bytes()
    capsys.readouterr()
    for out in ([], [str(tmp_path / "x"), "--out-path", str(tmp_path / "y")]):   # neither, or both
        assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "3", *out]) == 1
        assert "OUT" in capsys.readouterr().err


def test_mergekit_extract_lora_defaults(tmp_path, pair, capsys):
    """mergekit-extract-lora's command line without --max-rank runs with its default, 128 (it was
    refused: --rank was required), and --no-embed-lora is taken."""
    base_dir, ft_dir, _, _ = pair
    assert cli_main(["extract-lora", "--model", str(ft_dir), "--base-model", str(base_dir), "--no-embed-lora",
                     "--out-path", str(tmp_path / "mk"), "-q"]) == 0
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "128", "-q",
                     str(tmp_path / "ours")]) == 0
    a = (tmp_path / "mk" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "ours" / "adapter_model.safetensors").read_bytes()
    assert "(--rank 128 capped by the matrices' sizes)" in capsys.readouterr().out
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "-q"]) == 1
    assert "llamix extract-lora: error: OUT / --out-path: give the output folder once" in capsys.readouterr().err


def test_rank_above_the_matrices_is_capped_and_said(tmp_path, pair, capsys):
    """--rank larger than every matrix: the adapter's r is the largest rank written, and the
    summary line says the asked rank was capped (it said 'rank 10000')."""
    base_dir, ft_dir, _, _ = pair
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "10000", "-q",
                     str(tmp_path / "out")]) == 0
    r = json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"]
    assert r < 10000
    assert f"LoRA of rank {r} (--rank 10000 capped by the matrices' sizes)" in capsys.readouterr().out


def test_a_resized_vocabulary_is_saved_whole_and_refused_at_merge_time(tmp_path, pair, capsys):
    """A fine-tune with more vocabulary rows (48 vs 40): the adapter saves embed_tokens and lm_head
    whole with a warning, as mergekit-extract-lora does; applying it as base+adapter is refused
    naming the adapter file, the tensor and both shapes (it wrote a model whose config said 40
    with 48-row embeddings)."""
    base_dir, _, base, ft = pair
    big = dict(ft)
    rng = np.random.default_rng(4)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        big[name] = np.concatenate([ft[name], rng.standard_normal((8, ft[name].shape[1])).astype(np.float32)])
    ft_dir = write_model(tmp_path / "ft48", big, vocab=48)
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "2", "--embed-lora",
                     str(tmp_path / "lora")]) == 0
    err = capsys.readouterr().err
    assert "warning: model.embed_tokens.weight has shape [48, 16], the base's [40, 16] (the vocabulary was resized)" \
        in err, err
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert {"embed_tokens", "lm_head"} <= set(cfg["modules_to_save"]) and "embed_tokens" not in cfg["target_modules"]
    assert "resize the base's embeddings" in (tmp_path / "lora" / "README.md").read_text()
    with pytest.raises(llamix.ConfigError, match=r"lora/adapter_model\.safetensors saves (model\.embed_tokens|lm_head)"
                                                 r"\.weight with shape \[48, 16\], the model's is \[40, 16\]"):
        llamix.merge({"merge_method": "passthrough", "models": [{"model": f"{base_dir}+{tmp_path / 'lora'}"}]},
                     tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_the_base_as_its_own_fine_tune_is_refused_and_force_replaces(tmp_path, pair, capsys):
    """--model equal to --base (the same folder or an identical copy): every delta is zero, which is
    an error (it wrote an adapter of zeros); --force replaces an existing OUT (it had no --force)."""
    base_dir, ft_dir, base, _ = pair
    copy = write_model(tmp_path / "copy", base)
    for model in (base_dir, copy):
        assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(model), "--rank", "2", "-q",
                         str(tmp_path / "zero")]) == 1
        assert "the fine-tune equals the base" in capsys.readouterr().err
        assert not (tmp_path / "zero").exists() and not list(tmp_path.glob(".zero*"))
    out = tmp_path / "out"
    argv = ["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "2", "-q", str(out)]
    assert cli_main(argv) == 0
    (out / "stale.txt").write_text("x")
    assert cli_main(argv) == 1 and "pass --force to replace it" in capsys.readouterr().err
    assert cli_main([*argv, "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / "adapter_model.safetensors").exists()
    assert cli_main(["extract-lora", "--base", str(base_dir), "--model", str(ft_dir), "--rank", "2", "-q", "--force",
                     str(base_dir)]) == 1   # never over an input
    assert "is or holds an input" in capsys.readouterr().err
