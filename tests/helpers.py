"""Helpers shared by the tests: skipping or failing on a missing tool, switching the kernel variant
or thread count for a block, bf16 rounding written from the definition, error measures, the known
stories260K tokens, and tiny LLaMA-shaped Hugging Face folders made on the fly (fixed seeds).

Only numpy at import time: the float64 oracles (merge_oracle.py) use the bf16 functions here and
stay independent of llamix; llamix is imported inside the functions that switch its settings.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

IN_CI = bool(os.environ.get("CI"))

# stories260K (shared/assets): BOS + "Once upon a time", and the 60 greedy tokens that follow it
# (known-good, from llama2.c's run.c; shared/assets/README.md).
STORIES_PROMPT = [1, 403, 407, 261, 378]
STORIES_GREEDY_60 = [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
                     411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
                     338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310]


def skip_or_fail(msg: str):
    """Skip the test with ``msg``; under CI (CI set), where every tool must be there, fail it."""
    import pytest

    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


# --- llamix settings for a block -----------------------------------------------------------------
@contextlib.contextmanager
def _setting(get, set_, value):
    before = get()
    set_(value)
    try:
        yield value
    finally:
        set_(before)


def using_isa(name: str):
    """Run the block with kernel variant ``name``; the previous variant is restored after it."""
    import llamix
    from llamix import _C

    return _setting(_C.isa, llamix.set_isa, name)


def assert_packed_under_any_isa_runs_under_any(data, qtype: str, shape: tuple[int, int], rng) -> None:
    """A weight of ``qtype`` (its GGUF bytes ``data``) prepared under each available kernel variant
    and run under each gives the scalar reference's bits, alone and in matmul_many, for decode
    (1 row) and prefill (9 rows)."""
    import llamix
    from llamix import QuantizedTensor, _C

    k = shape[1]
    x = rng.standard_normal((9, k)).astype(np.float32)
    with using_isa("scalar"):
        expected = llamix.matmul(x, QuantizedTensor.from_bytes(data, qtype, shape))
    other = llamix.quantize(rng.standard_normal((24, k)).astype(np.float32), "q4_k")
    for packed_for in _C.available_isas():
        with using_isa(packed_for):
            w = QuantizedTensor.from_bytes(data, qtype, shape)
            w.prepared()
        for run_on in _C.available_isas():
            with using_isa(run_on):
                for n in (1, 9):
                    msg = f"packed for {packed_for}, run on {run_on}, n={n}"
                    np.testing.assert_array_equal(llamix.matmul(x[:n], w), expected[:n], err_msg=msg)
                    np.testing.assert_array_equal(llamix.matmul_many(x[:n], [w, other])[0], expected[:n], err_msg=msg)


def using_threads(n):
    """Run the block with ``n`` kernel threads; the previous count is restored after it."""
    import llamix
    from llamix import _C

    return _setting(_C.threads, llamix.set_threads, n)


@contextlib.contextmanager
def merge_inputs_streamed():
    """Run the block with a merge cache budget of 0: inputs in files are read chunk by chunk on
    every pass, never kept resident; the previous budget is restored after it."""
    from llamix import _C

    before = _C.merge_cache_budget(0)
    try:
        yield
    finally:
        _C.merge_cache_budget(before)


def write_tensors(folder: Path, tensors: dict):
    """``{name: (stored type "f32" / "f16" / "bf16", array)}`` written as one safetensors file in
    ``folder``; its :class:`SafetensorsCheckpoint`."""
    from llamix.formats.safetensors import SafetensorsCheckpoint, SafetensorsWriter

    w = SafetensorsWriter(folder, [(name, short, a.shape) for name, (short, a) in tensors.items()])
    for name, (_, a) in tensors.items():
        w.write(name, a)
    w.close()
    return SafetensorsCheckpoint(folder)


# --- numbers -------------------------------------------------------------------------------------
def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even, NaN kept quiet; written
    from the definition."""
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def bf16_to_f64(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float64 (exact)."""
    return (np.asarray(u16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def rms(a) -> float:
    return float(np.sqrt((np.asarray(a, np.float64) ** 2).mean()))


def rel_rms(a, ref) -> float:
    """RMS of a - ref relative to the RMS of ref, in float64."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.sqrt(((a - ref) ** 2).mean() / (ref ** 2).mean()))


def log_softmax(z) -> np.ndarray:
    """float64 log-probabilities along the last axis."""
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --- tiny Hugging Face models ---------------------------------------------------------------------
LAYER_TENSORS = {
    "self_attn.q_proj.weight": lambda h, f: (h, h),
    "self_attn.k_proj.weight": lambda h, f: (h // 2, h),
    "self_attn.v_proj.weight": lambda h, f: (h // 2, h),
    "self_attn.o_proj.weight": lambda h, f: (h, h),
    "mlp.gate_proj.weight": lambda h, f: (f, h),
    "mlp.up_proj.weight": lambda h, f: (f, h),
    "mlp.down_proj.weight": lambda h, f: (h, f),
    "input_layernorm.weight": lambda h, f: (h,),
    "post_attention_layernorm.weight": lambda h, f: (h,),
}


def tiny_tensors(seed: int, layers: int = 3, hidden: int = 16, ffn: int = 24, vocab: int = 40) -> dict:
    """The float32 tensors of a random LLaMA (GQA 2:1, untied head) with Hugging Face names."""
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32)}
    for i in range(layers):
        for name, shape in LAYER_TENSORS.items():
            t[f"model.layers.{i}.{name}"] = (rng.standard_normal(shape(hidden, ffn)) * 0.2).astype(np.float32)
    t["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    t["lm_head.weight"] = rng.standard_normal((vocab, hidden)).astype(np.float32)
    return t


def perturbed(tensors: dict, seed: int, scale: float = 0.02) -> dict:
    """A "fine-tune": every tensor plus scale * standard normal noise, as float32."""
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in tensors.items()}


def write_model(folder: Path, tensors: dict, dtype: str = "float32", layers: int = 3, hidden: int = 16,
                vocab: int = 40) -> Path:
    """A Hugging Face folder written with the `safetensors` package (independent of llamix)."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    if dtype == "bfloat16":
        # the safetensors package cannot write bf16 from numpy: lay the file out by hand
        data = {k: f32_to_bf16(v) for k, v in tensors.items()}
        header, offset = {}, 0
        for k, v in data.items():
            header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + v.nbytes]}
            offset += v.nbytes
        raw = json.dumps(header).encode()
        with open(folder / "model.safetensors", "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for v in data.values():
                f.write(v.tobytes())
    else:
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": 24, "num_hidden_layers": layers,
              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": dtype}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "source": folder.name}))
    return folder


def read_model(folder: Path) -> dict:
    """Every tensor of a (sharded) output folder as float64 (parsed here, independent of llamix)."""
    out = {}
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for name, e in header.items():
            b, end = e["data_offsets"]
            buf = raw[8 + n + b: 8 + n + end]
            if e["dtype"] == "BF16":
                v = bf16_to_f64(np.frombuffer(buf, np.uint16))
            else:
                v = np.frombuffer(buf, {"F32": np.float32, "F16": np.float16}[e["dtype"]])
            out[name] = v.astype(np.float64).reshape(e["shape"])
    return out


def perturbed_copies(src: Path, dest: Path, seeds, scale: float, files=("config.json",)) -> tuple[dict, list[Path]]:
    """Float32 copies of the Hugging Face folder ``src`` (e.g. stories260K_hf) with every tensor
    perturbed (seed s -> dest/ft{s}), ``files`` copied beside them. Returns the source tensors
    (float32) and the folders."""
    from safetensors.numpy import save_file

    base = read_model(src)
    base = {k: v.astype(np.float32) for k, v in base.items()}
    folders = []
    for s in seeds:
        folder = dest / f"ft{s}"
        folder.mkdir(parents=True)
        save_file(perturbed(base, s, scale), str(folder / "model.safetensors"))
        for f in files:
            (folder / f).write_bytes((src / f).read_bytes())
        folders.append(folder)
    return base, folders


def hub_cache(root: Path, repo: str, source: Path, commit="0123456789abcdef0123456789abcdef01234567", ref="main"):
    """`source`'s files placed in a cache folder the way huggingface_hub lays one out."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    snap.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(exist_ok=True)
    for f in source.iterdir():
        blob = blobs / f"{abs(hash((repo, f.name))):x}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("../../blobs") / blob.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return commit
