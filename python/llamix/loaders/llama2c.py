"""Loading a llama2.c checkpoint (``.bin``, fp32) and the SentencePiece tokenizer beside it."""
from __future__ import annotations

from pathlib import Path

from ..config import ModelConfig
from ..errors import FormatError
from ..formats.llama2c import Llama2cCheckpoint
from ..formats.names import tensor_names
from ..tokenizer import Tokenizer
from .checkpoint import Checkpoint, Progress, float_weight, norm_weight


def config_from_llama2c(h: dict, source: str = "llama2.c header") -> ModelConfig:
    """The hyper-parameters of a llama2.c header (RMSNorm eps and RoPE base are fixed there)."""
    return ModelConfig(dim=h["dim"], n_layers=h["n_layers"], n_heads=h["n_heads"], n_kv_heads=h["n_kv_heads"],
                       hidden_dim=h["hidden_dim"], vocab_size=h["vocab_size"], context_length=h["seq_len"],
                       rms_eps=1e-5, rope_theta=10000.0, tie_embeddings=h["shared_classifier"], architecture="llama",
                       source=source)


def load_llama2c(path: Path, qtype: str | None, progress: Progress | None = None,
                 tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of a ``.model`` file beside the checkpoint, which is then not
    read (``False``: no tokenizer)."""
    ck = Llama2cCheckpoint(path)
    config = config_from_llama2c(ck.config, str(path))
    tensors = {}
    names = tensor_names(config)
    for i, name in enumerate(names):
        w = ck.tensors[name]
        tensors[name] = norm_weight(w, "f32") if w.ndim == 1 else float_weight(w, "f32", qtype)
        if progress is not None:
            progress(i + 1, len(names), name)
    own = tokenizer is None or tokenizer is True
    tok = None if own or tokenizer is False else tokenizer
    candidates = [path.with_suffix(".model"), path.parent / "tokenizer.model"]
    others = sorted(path.parent.glob("*.model"))
    if len(others) == 1:
        candidates.append(others[0])
    for c in candidates if own else []:
        if c.is_file():
            tok = Tokenizer.from_file(c)
            if tok.vocab_size != config.vocab_size:  # llama2.c's vocabularies are the tokenizer's, no padding
                why = f"{path}: vocab_size {config.vocab_size} does not match the {tok.vocab_size} pieces of {c}"
                raise FormatError(f"{why} (pass the model's tokenizer with tokenizer=)",
                                  cli=f"{why} (give the model's tokenizer with --tokenizer FILE)")
            break
    return Checkpoint(config, tensors, tok, None, str(path), keep_alive=ck)
