"""Hugging Face folders of every architecture llamix runs (llama, mistral, qwen2, qwen3, gemma3,
phi3) against transformers (a peer): small random models built with transformers' own classes,
saved with save_pretrained (safetensors, float32), loaded by llamix from the folder and from
llamix's own GGUF export of it; exports of each architecture run by llama.cpp with the same greedy
tokens as llamix on the same file.

Every case has grouped-query attention and a sequence longer than its sliding window; norms and
biases are random (Gemma's norms around 0, since it multiplies by 1 + w). Tolerance 1e-4 of the
largest logit: both sides compute in float32 in different orders through up to 7 layers (measured
errors are a few 1e-7 to a few 1e-6); a misplaced row, a missing +1 or a wrong window is O(1).
Exports whose architecture's GGUF keys cannot say what the folder says are refused, and tested so.
"""
from __future__ import annotations

import copy
import json
import shutil
import zlib

import numpy as np
import pytest

import llamix
from llamix.cli import main as llamix_main
from llamix.formats.gguf import GGUFReader

import llama_cpp_peer
from conftest import ASSETS, require_peer

pytestmark = pytest.mark.peers

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.2, pad_token_id=None, bos_token_id=1,
            eos_token_id=2)
GEMMA = dict(hidden_size=48, head_dim=16, num_hidden_layers=7, query_pre_attn_scalar=16, sliding_window=4,
             rms_norm_eps=1e-6)  # 7 layers: layer 5 is global, the others slide; 48 = 4 heads x 12, heads of 16

# name: (transformers config class, model class, config fields, tokenizer, export refusal (regex) or None,
#        llama.cpp runs it as transformers does)
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False), "bpe", None, True),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4, tie_word_embeddings=True), "bpe",
                       None, False),  # llama.cpp's llama has no window
    "qwen2-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_theta=1e6), "bpe", None,
                   True),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=1, tie_word_embeddings=False), "bpe", None,
              True),
    "qwen2-window-layers": ("Qwen2Config", "Qwen2ForCausalLM",
                            dict(num_hidden_layers=3, use_sliding_window=True, sliding_window=4, max_window_layers=1),
                            "bpe", "cannot hold which layers slide", False),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, tie_word_embeddings=False), "bpe", None, True),
    "qwen3-window-tied": ("Qwen3Config", "Qwen3ForCausalLM",
                          dict(head_dim=16, tie_word_embeddings=True, use_sliding_window=True, sliding_window=5,
                               max_window_layers=0), "bpe", "cannot hold a sliding window", False),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(GEMMA, rope_theta=1e6), "spm", None, True),
    "gemma3-untied-scaled": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                             dict(GEMMA, tie_word_embeddings=False, sliding_window=5, rope_theta=2e5,
                                  rope_local_base_freq=3e4, rope_scaling={"rope_type": "linear", "factor": 2.0}),
                             "bpe", None, True),
    "gemma3-scalar-layers": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                             dict(GEMMA, num_hidden_layers=4, query_pre_attn_scalar=24,
                                  layer_types=["sliding_attention", "full_attention", "full_attention",
                                               "sliding_attention"]),
                             "bpe", "cannot hold attn_scale", False),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(tie_word_embeddings=False), "spm", None, True),
    "phi3-window-tied": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=4, tie_word_embeddings=True), "bpe",
                         None, False),  # llama.cpp ignores phi3's window
}
IDS = [1, 45, 17, 142, 3, 88, 60, 61, 2, 9, 233, 71]  # longer than every window
TEXT = ("Once upon a time there was a little girl named Lily. She loved to play outside in the park with her "
        "friends. One day, she saw a big red ball under a tree and asked her mother if she could keep it. "
        "The sun was warm, the birds were singing, and everyone was happy to be outside together. ") * 4


def _rel(a, ref) -> float:
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def peers():
    """torch and transformers, imported once per module and warmed up (transformers imports its
    modelling code on first use: a second the first test would otherwise pay)."""
    torch, transformers = require_peer("torch"), require_peer("transformers")
    cfg = transformers.LlamaConfig(**{**BASE, "vocab_size": 16, "num_hidden_layers": 1})
    with torch.no_grad():
        transformers.LlamaForCausalLM(cfg).eval()(torch.tensor([[1, 2]]))
    return torch, transformers


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    """Two small real vocabularies: a byte-level BPE tokenizer.json trained here with the
    `tokenizers` library (GPT-2 pre-tokenizer, 300 tokens), and stories260K's SentencePiece model
    (the cases using it skip without the test assets)."""
    tokenizers = require_peer("tokenizers")
    bpe = tmp_path_factory.mktemp("bpe")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    tok.save(str(bpe / "tokenizer.json"))
    (bpe / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": None,
                                                           "add_bos_token": False}))
    out = {"bpe": (bpe, tok.get_vocab_size())}
    if (ASSETS / "stories260K" / "tok512.model").is_file():
        spm = tmp_path_factory.mktemp("spm")
        (spm / "tokenizer.model").write_bytes((ASSETS / "stories260K" / "tok512.model").read_bytes())
        out["spm"] = (spm, 512)
    return out


def _randomize(torch, model, gemma: bool) -> None:
    """Norms around 1 (Gemma's offsets around 0) and biases that matter."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(-0.5, 0.5) if gemma else p.uniform_(0.5, 1.5)
            elif n.endswith(".bias"):
                p.normal_(0.0, 0.5)


def _build(peers, tokenizer_files, case: str, folder):
    torch, transformers = peers
    cfg_cls, model_cls, fields, tok_kind, _, _ = CASES[case]
    if tok_kind not in tokenizer_files:
        pytest.skip(f"test assets not found at {ASSETS} (stories260K's tokenizer)")
    tok_dir, vocab = tokenizer_files[tok_kind]
    torch.manual_seed(zlib.crc32(case.encode()))
    cfg = getattr(transformers, cfg_cls)(**{**BASE, "vocab_size": vocab, **fields}, attn_implementation="eager")
    model = getattr(transformers, model_cls)(cfg).eval()
    _randomize(torch, model, case.startswith("gemma"))
    model.save_pretrained(folder, safe_serialization=True)
    for f in tok_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return model


@pytest.fixture(scope="module")
def made(peers, tokenizer_files, tmp_path_factory):
    """case -> (transformers model, its folder, float64 logits of IDS), built once per module."""
    cache = {}

    def get(case: str):
        if case not in cache:
            torch = peers[0]
            # a neutral name: llama.cpp looks up Phi-3's own special tokens in a file whose name says phi3
            folder = tmp_path_factory.mktemp("hf")
            model = _build(peers, tokenizer_files, case, folder)
            with torch.no_grad():
                ref = model(torch.tensor([IDS])).logits[0].double().numpy()
            cache[case] = (model, folder, ref)
        return cache[case]
    return get


@pytest.mark.parametrize("case", list(CASES))
def test_folder_and_its_gguf_export_match_transformers(made, tmp_path, case):
    """The folder: one batch, then prefill + one token at a time (the window moves with the
    position). Its F32 GGUF export, loaded again: the same logits (or the export is refused when
    llama.cpp's architecture cannot hold the config, leaving no file)."""
    _, folder, ref = made(case)
    m = llamix.load(folder, n_ctx=32)
    err = _rel(m.logits(IDS), ref)
    assert err < 1e-4, err
    m.reset()
    steps = np.stack([m.eval(IDS[:3])] + [m.eval([t]) for t in IDS[3:]])
    assert _rel(steps, ref[2:]) < 1e-4
    out = tmp_path / f"{case}.gguf"
    refusal = CASES[case][4]
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            llamix.export_gguf(folder, out, "f32")
        assert not out.exists()
        return
    llamix.export_gguf(folder, out, "f32")
    g = llamix.load(out, n_ctx=32)
    assert g.config.architecture == m.config.architecture
    err = _rel(g.logits(IDS), ref)
    assert err < 1e-4, err
    if case.startswith("gemma3"):  # GGUF norms hold 1 + w, as llama.cpp's converter writes them
        hf, file = made(case)[0].model.layers[0], GGUFReader(out).tensors
        for module, name in ((hf.input_layernorm, "attn_norm"), (hf.self_attn.q_norm, "attn_q_norm")):
            np.testing.assert_array_equal(file[f"blk.0.{name}.weight"].array(), module.weight.detach().numpy() + 1)


def test_configs_read_as_transformers_reads_them(made):
    """Which layers slide, RoPE bases, scales and the tied head, from the 5.x config.json."""
    get = lambda case: llamix.load(made(case)[1], n_ctx=16, tokenizer=False).config  # noqa: E731
    c = get("gemma3")
    assert c.architecture == "gemma3" and c.sliding_layers is None and c.sliding_window_pattern == 6
    assert [c.layer_window(i) for i in range(7)] == [4, 4, 4, 4, 4, 0, 4]
    assert (c.rope_theta, c.rope_theta_local, c.attn_scale, c.tie_embeddings) == (1e6, 1e4, None, True)
    assert c.embed_scale == float(np.float32(np.sqrt(48)))
    c = get("gemma3-untied-scaled")
    assert (c.rope_theta, c.rope_theta_local, c.rope_scaling, c.tie_embeddings) == (
        2e5, 3e4, {"rope_type": "linear", "factor": 2.0}, False)
    c = get("gemma3-scalar-layers")
    assert c.sliding_layers == (True, False, False, True) and c.attn_scale == float(np.float32(24 ** -0.5))
    assert [c.layer_rope_table(i) for i in range(4)] == [1, 0, 0, 1]
    c = get("qwen2-window-layers")
    assert c.attn_bias and [c.layer_window(i) for i in range(3)] == [0, 4, 4]
    c = get("qwen3-window-tied")
    assert c.qk_norm and c.sliding_layers is None and c.sliding_window == 5 and c.tie_embeddings
    c = get("phi3-window-tied")
    assert c.architecture == "phi3" and [c.layer_window(i) for i in range(2)] == [4, 4]
    assert get("qwen2").sliding_window == 0 and get("mistral-window").sliding_window == 4


def _as_4x(cfg: dict) -> dict:
    """A transformers 5.x config.json as 4.x wrote it: rope_theta / rope_scaling (and Gemma's
    rope_local_base_freq, sliding_window_pattern), no layer_types."""
    drop = ("rope_parameters", "layer_types", "dtype", "_sliding_window_pattern")
    out = {k: v for k, v in cfg.items() if k not in drop}
    out["torch_dtype"] = cfg.get("dtype", "float32")
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params:
        full, local = dict(params["full_attention"]), params["sliding_attention"]
        out["rope_local_base_freq"] = local["rope_theta"]
        out["sliding_window_pattern"] = 6
    else:
        full = dict(params)
    out["rope_theta"] = full.pop("rope_theta")
    full.pop("partial_rotary_factor", None)
    out["rope_scaling"] = None if full.get("rope_type", "default") == "default" else {
        "type" if "factor" in full else "rope_type": full.pop("rope_type"), **full}
    return out


@pytest.mark.parametrize("case", ["gemma3", "gemma3-untied-scaled", "qwen2-window-layers", "phi3-window-tied"])
def test_transformers_4x_config_spelling(made, tmp_path, case):
    """The same folder with its config.json spelt as transformers 4.x wrote it (Qwen2's
    use_sliding_window / max_window_layers and Gemma's sliding_window_pattern decide which layers
    slide) loads to the same model."""
    _, folder, ref = made(case)
    v4 = tmp_path / "v4"
    v4.mkdir()
    (v4 / "model.safetensors").symlink_to(folder / "model.safetensors")
    (v4 / "config.json").write_text(json.dumps(_as_4x(json.loads((folder / "config.json").read_text()))))
    a = llamix.load(folder, n_ctx=16, tokenizer=False).config
    b = llamix.load(v4, n_ctx=16, tokenizer=False)
    assert {**b.config.to_dict(), "extra": {}} == {**a.to_dict(), "extra": {}}
    assert _rel(b.logits(IDS), ref) < 1e-4


@pytest.mark.parametrize("case", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_bf16_folders(peers, made, tmp_path, case):
    """bf16 checkpoints: llamix computes in float32 on the bf16 weights, as transformers does with
    the model in float32 on the same weights (1e-4; Gemma's embedding scale is sqrt(hidden) rounded
    to bf16, as transformers has it for a bf16 model). transformers in bf16 rounds every activation
    too: within 6% of the largest logit (measured 1.5-3.5%)."""
    torch, transformers = peers
    model = copy.deepcopy(made(case)[0]).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16", safe_serialization=True)
    with torch.no_grad():
        ref_bf16 = model(torch.tensor([IDS])).logits[0].double().numpy()
        # the bf16 weights computed in float32 (loaded anew: .to() would keep bf16-rounded RoPE buffers)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32,
                                                                  attn_implementation="eager").eval()
        if case == "gemma3":
            scale = model.model.embed_tokens.embed_scale
            scale.copy_(scale.to(torch.bfloat16).to(torch.float32))
        ref = model(torch.tensor([IDS])).logits[0].double().numpy()
    m = llamix.load(tmp_path / "bf16", n_ctx=16, tokenizer=False)
    assert m.tensors["blk.0.attn_q.weight"].qtype == "bf16"
    ours = m.logits(IDS)
    assert _rel(ours, ref) < 1e-4
    assert _rel(ours, ref_bf16) < 6e-2
    if case == "gemma3":
        assert m.config.embed_scale == float(torch.tensor(48 ** 0.5).to(torch.bfloat16)) != float(np.sqrt(48))
        # exported as llama.cpp's converter writes a bf16 Gemma-3: the file's scale is sqrt(hidden) in float32
        out = tmp_path / "bf16.gguf"
        llamix.export_gguf(tmp_path / "bf16", out, "f16", tokenizer=made(case)[1] / "tokenizer.model")
        assert llamix.load(out, n_ctx=16).config.embed_scale == float(np.float32(np.sqrt(48)))


@pytest.fixture(scope="module")
def gemma3_multimodal(peers, tmp_path_factory):
    """A tiny Gemma3ForConditionalGeneration (SigLIP vision tower, projector, text model) as
    transformers saves it, the head tied to the embedding."""
    torch, transformers = peers
    torch.manual_seed(7)
    text = transformers.Gemma3TextConfig(**{**BASE, **GEMMA, "vocab_size": 300})
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    cfg = transformers.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                                    image_token_index=299, boi_token_index=297, eoi_token_index=298,
                                    attn_implementation="eager")
    model = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    _randomize(torch, model, gemma=True)
    folder = tmp_path_factory.mktemp("mm")
    model.save_pretrained(folder, safe_serialization=True)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([IDS])).logits[0].double().numpy()
    return folder, ref


# the two layouts of an image-text Gemma-3 folder: as published (and as transformers saves it),
# and under the module paths of transformers' Gemma3ForConditionalGeneration in memory
LAYOUTS = ({"language_model.model.": "language_model.model.", "vision_tower.": "vision_tower.",
            "multi_modal_projector.": "multi_modal_projector.", "language_model.lm_head.": "language_model.lm_head."},
           {"language_model.model.": "model.language_model.", "vision_tower.": "model.vision_tower.",
            "multi_modal_projector.": "model.multi_modal_projector.", "language_model.lm_head.": "lm_head."})


def test_gemma3_image_text_folder_loads_its_text_model(gemma3_multimodal, tmp_path):
    """model_type gemma3: the text model of an image-text folder (weights under
    language_model.model., or model.language_model.) runs as transformers'
    Gemma3ForConditionalGeneration does on text; a folder without the text model is refused by name."""
    safetensors_torch = require_peer("safetensors.torch")
    folder, ref = gemma3_multimodal
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "gemma3"
    m = llamix.load(folder, n_ctx=16)
    assert m.config.architecture == "gemma3" and m.config.tie_embeddings
    assert _rel(m.logits(IDS), ref) < 1e-4
    weights = safetensors_torch.load_file(str(folder / "model.safetensors"))
    saved = [k for k in weights if k.endswith("vision_tower.embeddings.patch_embedding.weight")]
    assert saved, sorted(weights)[:5]
    i = next(i for i, layout in enumerate(LAYOUTS) if saved[0].startswith(layout["vision_tower."]))
    layout, other = LAYOUTS[i], LAYOUTS[1 - i]
    renamed = {}
    for k, v in weights.items():
        a = next(a for a, b in layout.items() if k.startswith(b))
        renamed[other[a] + k[len(layout[a]):]] = v
    moved = tmp_path / "other-layout"
    moved.mkdir()
    (moved / "config.json").write_text(json.dumps(cfg))
    safetensors_torch.save_file(renamed, str(moved / "model.safetensors"))
    assert _rel(llamix.load(moved, n_ctx=16).logits(IDS), ref) < 1e-4
    vision_only = tmp_path / "vision-only"
    vision_only.mkdir()
    (vision_only / "config.json").write_text(json.dumps(cfg))
    safetensors_torch.save_file({k: v for k, v in weights.items() if "language_model" not in k},
                                str(vision_only / "model.safetensors"))
    with pytest.raises(ValueError, match=r"vision-only: no text model found"):
        llamix.load(vision_only)


def test_refusals_name_the_field(made, tmp_path):
    _, folder, _ = made("gemma3")
    cfg = json.loads((folder / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").symlink_to(folder / "model.safetensors")
    for change, message in (({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
                            ({"hidden_activation": "gelu"}, "hidden_activation 'gelu'"),
                            ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
                            ({"layer_types": ["full_attention"] * 3}, "layer_types"),
                            ({"sliding_window": "wide"}, "sliding_window must be a positive integer"),
                            ({"rope_parameters": {**cfg["rope_parameters"], "sliding_attention":
                                                  {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}},
                             "sliding-window layers"),
                            ({"model_type": "gemma2"}, "model_type 'gemma2'")):
        (bad / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=message):
            llamix.load(bad)
    _, folder, _ = made("phi3")
    cfg = json.loads((folder / "config.json").read_text())
    (bad / "model.safetensors").unlink()
    (bad / "model.safetensors").symlink_to(folder / "model.safetensors")
    for change, message in (({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 8,
                                                  "long_factor": [1.0] * 8}}, "LongRoPE"),
                            ({"partial_rotary_factor": 0.75, "rope_parameters": {"rope_theta": 1e4}},
                             "partial_rotary_factor"),
                            ({"num_hidden_layers": 1}, "not part of a phi3 model")):
        (bad / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=message):
            llamix.load(bad)


@pytest.mark.parametrize("case", ["qwen2", "qwen3", "gemma3", "phi3"])
def test_merge_straight_to_gguf(made, tmp_path, case):
    """``llamix merge CONFIG out.gguf`` on folders of each architecture writes the file that merging
    to a folder and exporting it writes (names, q/k row order, Gemma's norms, phi3's fused
    tensors); a linear merge of a model with itself is that model."""
    _, folder, ref = made(case)
    twin = shutil.copytree(folder, tmp_path / "twin")  # one model listed twice is refused
    cfg = tmp_path / "merge.yml"
    cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {folder}\n    parameters: {{weight: 0.3}}\n"
                   f"  - model: {twin}\n    parameters: {{weight: 0.7}}\ndtype: float32\n")
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    llamix.merge_to_gguf(cfg, one, "f32")
    llamix.export_gguf(llamix.merge(cfg, tmp_path / "folder"), two, "f32")
    a, b = GGUFReader(one), GGUFReader(two)
    assert set(a.tensors) == set(b.tensors)
    for name in b.tensors:
        np.testing.assert_array_equal(a.tensors[name].raw(), b.tensors[name].raw(), err_msg=name)
    assert _rel(llamix.load(one, n_ctx=16).logits(IDS), ref) < 1e-4


LLAMA_CPP_CASES = [c for c, spec in CASES.items() if spec[5]]


@pytest.mark.parametrize("qtype", ["q8_0", "f16"])
@pytest.mark.parametrize("case", LLAMA_CPP_CASES)
def test_quantized_export_same_greedy_tokens_as_llamacpp(made, tmp_path, case, qtype):
    """``llamix quantize FOLDER out.gguf --type q8_0`` (and f16): llama.cpp runs the file with the
    folder's vocabulary and gives the same 24 greedy tokens after the prompt as llamix on the same
    file (float32 KV caches on both sides), but for at most one near-tie."""
    llama_cpp_peer.require()
    _, folder, _ = made(case)
    out = tmp_path / f"{case}-{qtype}.gguf"
    assert llamix_main(["quantize", str(folder), str(out), "--type", qtype, "-q"]) == 0
    theirs = llama_cpp_peer.run_prompt_in_child(out, ids=IDS, n_greedy=24, n_ctx=64)
    m = llamix.load(out, n_ctx=64)
    assert m.tokenizer.model == {"spm": "llama", "bpe": "gpt2"}[CASES[case][3]]  # the folder's vocabulary
    logits, mine = m.eval(IDS), []
    # measured: Q8_0 files 1e-7 (the same block arithmetic), except where a last-bit difference
    # (RoPE tables, gemma3's GELU, an f16 table in llama.cpp) flips the rounding of a Q8_0
    # activation: up to 1.3e-2; F16 files 1e-3 (llama.cpp rounds activations to f16 against f16
    # weights)
    assert _rel(logits, theirs["logits"][0]) < 3e-2
    # llama.cpp's greedy tokens fed to llamix: each must be llamix's argmax, or within the logit
    # error above of it (a near-tie, where a last-bit difference may pick either; then both go on
    # from llama.cpp's token), and near-ties stay rare
    flips = []
    for i, t in enumerate(theirs["greedy"]):
        gap = float(logits.max() - logits[t])
        if int(np.argmax(logits)) != t:
            flips.append((i, gap))
            assert gap <= 6e-2 * float(np.sqrt(np.mean(np.square(logits)))), (i, gap, mine, theirs["greedy"])
        mine.append(t)
        logits = m.eval([t])
    assert len(flips) <= 1, flips
