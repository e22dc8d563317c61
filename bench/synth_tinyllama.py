"""A TinyLlama-1.1B-shaped f16 GGUF with synthesized, not trivially uniform weights, for
bench/quant_quality.py (no download: this machine has no internet).

Shape: hidden 2048, ffn 5632, 22 layers, 32 query / 4 key-value heads, vocabulary 32000 (the
llama SentencePiece vocabulary of shared/assets/llama_tokenizer/ggml-vocab-llama-spm.gguf), so
every row is a multiple of 256 and no tensor takes llama-quantize's fallback types.

How the weights are drawn (seeded; T = Student-t with 5 degrees of freedom scaled to unit
variance, heavy-tailed as trained weights are):
- every matrix W[out, in] = T * r[out] * c[in] / sqrt(in): r and c per-row and per-column
  log-normal scales (sigma 0.3), so rows and columns differ in magnitude; the two matrices that
  write into the residual stream (attn_output, ffn_down) are further divided by sqrt(2 * 22);
- the RMSNorm weights (attn_norm, ffn_norm) are log-normal (sigma 0.4) per channel, and the same 8
  channels in every layer are multiplied by 8: outlier activation channels, as real llamas have,
  so the importance matrix is far from uniform;
- token_embd = T; output_norm log-normal (sigma 0.2);
- output = 4.5 * T * r_v / sqrt(2048) with r_v log-normal (sigma 0.15): logits of standard
  deviation about 4.5 across the vocabulary, i.e. next-token distributions with real entropy
  (about 3 nats; measured by ``--check``), neither flat nor one-hot.

    python bench/synth_tinyllama.py OUT.gguf [--check]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
VOCAB = ASSETS / "llama_tokenizer" / "ggml-vocab-llama-spm.gguf"
SHAPE = dict(hidden=2048, ffn=5632, layers=22, heads=32, kv_heads=4, vocab=32000)
NU = 5.0
N_OUTLIERS, OUTLIER_GAIN = 8, 8.0
HEAD_STD = 4.5


def _t(rng, shape) -> np.ndarray:
    """Student-t (NU degrees of freedom) scaled to unit variance, float32."""
    z = rng.standard_normal(shape, dtype=np.float32)
    chi = rng.standard_gamma(NU / 2, size=shape, dtype=np.float32) * (2.0 / NU)
    return z / np.sqrt(chi) * np.float32(np.sqrt((NU - 2) / NU))


def _lognormal(rng, n, sigma) -> np.ndarray:
    return np.exp(sigma * rng.standard_normal(n)).astype(np.float32)


def _matrix(rng, out: int, inp: int, extra: float = 1.0) -> np.ndarray:
    r, c = _lognormal(rng, out, 0.3), _lognormal(rng, inp, 0.3)
    w = _t(rng, (out, inp))
    w *= (r * (extra / np.sqrt(inp)))[:, None]
    w *= c[None, :]
    return w.astype(np.float16)


def make(path, seed: int = 0) -> Path:
    """Write the model to ``path`` (f16 matrices, f32 norms); returns the path."""
    import gguf

    s = SHAPE
    h, L = s["hidden"], s["layers"]
    rng = np.random.default_rng(seed)
    voc = gguf.GGUFReader(VOCAB)
    tmp = Path(str(path) + ".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("synthetic TinyLlama-1.1B shape (bench/synth_tinyllama.py)")
    w.add_context_length(2048)
    w.add_embedding_length(h)
    w.add_block_count(L)
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(h // s["heads"])
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    f = voc.fields
    w.add_tokenizer_model("llama")
    w.add_token_list([bytes(f["tokenizer.ggml.tokens"].parts[i]) for i in f["tokenizer.ggml.tokens"].data])
    w.add_token_scores([float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data])
    w.add_token_types([int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    outliers = rng.choice(h, N_OUTLIERS, replace=False)
    def norm(sigma):
        v = _lognormal(rng, h, sigma)
        v[outliers] *= OUTLIER_GAIN
        return v

    kv = h // s["heads"] * s["kv_heads"]
    resid = 1.0 / np.sqrt(2 * L)
    w.add_tensor("token_embd.weight", _t(rng, (s["vocab"], h)).astype(np.float16))
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(0.4))
        w.add_tensor(p + "attn_q.weight", _matrix(rng, h, h))
        w.add_tensor(p + "attn_k.weight", _matrix(rng, kv, h))
        w.add_tensor(p + "attn_v.weight", _matrix(rng, kv, h))
        w.add_tensor(p + "attn_output.weight", _matrix(rng, h, h, resid))
        w.add_tensor(p + "ffn_norm.weight", norm(0.4))
        w.add_tensor(p + "ffn_gate.weight", _matrix(rng, s["ffn"], h))
        w.add_tensor(p + "ffn_up.weight", _matrix(rng, s["ffn"], h))
        w.add_tensor(p + "ffn_down.weight", _matrix(rng, h, s["ffn"], resid))
    w.add_tensor("output_norm.weight", _lognormal(rng, h, 0.2))
    head = _t(rng, (s["vocab"], h))
    head *= (HEAD_STD * _lognormal(rng, s["vocab"], 0.15) / np.sqrt(h))[:, None]
    w.add_tensor("output.weight", head.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return Path(path)


def check(path, text: str) -> None:
    """Print the mean next-token entropy (nats) and top-1 probability of the model on ``text``."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import llamix

    m = llamix.load(path, n_ctx=256)
    ids = m.tokenize(text)[:128]
    lg = np.asarray(m.logits(ids), dtype=np.float64)
    lg -= lg.max(-1, keepdims=True)
    p = np.exp(lg)
    p /= p.sum(-1, keepdims=True)
    ent = -(p * np.log(np.maximum(p, 1e-300))).sum(-1)
    print(f"{path}: {len(ids)} tokens, mean entropy {ent.mean():.2f} nats, mean top-1 probability "
          f"{p.max(-1).mean():.3f}, logit std {np.asarray(m.logits(ids)).std(-1).mean():.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="print the f16 model's next-token entropy")
    a = ap.parse_args()
    if not Path(a.out).exists():
        make(a.out, a.seed)
    if a.check:
        check(a.out, (ASSETS.parent / "MERGE_METHODS.md").read_text(encoding="utf-8"))
