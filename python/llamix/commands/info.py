"""``llamix info MODEL``: hyper-parameters, tensor types and sizes, tokenizer, and the CPU's kernels."""
from __future__ import annotations

import json
from collections import Counter

from .._runtime import cpu_info
from ..loaders import load_checkpoint, vocabulary_only
from ..tokenizer import Tokenizer
from .common import MODEL_HELP, TOKENIZER_HELP


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help=MODEL_HELP + " (omit for CPU info only)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def describe_tokenizer(tok: Tokenizer | None) -> dict | None:
    if tok is None:
        return None
    return {"source": tok.source, "model": tok.model, "pre": tok.pre, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "eos_ids": list(tok.eos_ids), "add_bos": tok.add_bos,
            "add_eos": tok.add_eos}


def run(args) -> int:
    out: dict = {"cpu": cpu_info()}
    if args.model:
        override = Tokenizer.from_file(args.tokenizer) if args.tokenizer else None
        vocab = vocabulary_only(args.model, override)
        if vocab is not None:  # a vocabulary-only GGUF: nothing to load but its tokenizer
            out["model"] = {"source": str(args.model), "architecture": vocab[0], "weights": None,
                            "tokenizer": describe_tokenizer(vocab[1])}
        else:
            ck = load_checkpoint(args.model, tokenizer=override)
            types = Counter(getattr(t, "qtype", "f32") for t in ck.tensors.values())
            out["model"] = {
                "source": ck.source,
                "config": {k: v for k, v in ck.config.to_dict().items() if k != "extra"},
                "tensor_types": dict(types),
                "n_params": int(sum(t.shape[0] * t.shape[1] if hasattr(t, "qtype") else t.size
                                    for t in ck.tensors.values())),
                "bytes": int(sum(t.nbytes for t in ck.tensors.values())),
                "tokenizer": describe_tokenizer(ck.tokenizer),
            }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    c = out["cpu"]
    print(f"cpu: kernels {c['isa']} (available {', '.join(c['available_isas'])}), threads {c['threads']}, "
          f"physical cores {c['physical_cores']}")
    print(f"cpu features: {' '.join(c['features'])}")
    if args.model:
        m = out["model"]
        print(f"model: {m['source']}")
        if "config" in m:
            for k, v in m["config"].items():
                print(f"  {k:16} {v}")
            print(f"  {'parameters':16} {m['n_params'] / 1e6:.2f} M, {m['bytes'] / 2**20:.1f} MiB")
            print(f"  {'tensor types':16} " + ", ".join(f"{k}: {v}" for k, v in sorted(m["tensor_types"].items())))
        else:
            print(f"  {'architecture':16} {m['architecture']}")
            print(f"  {'weights':16} none: a vocabulary-only GGUF file (no tensors)")
        t = m["tokenizer"]
        if t is None:
            print(f"  {'tokenizer':16} none (pass --tokenizer)")
        else:
            kind = "SentencePiece" if t["model"] == "llama" else f"byte-level BPE, pre-tokenizer {t['pre']}"
            print(f"  {'tokenizer':16} {kind}, {t['vocab_size']} tokens, bos {t['bos_id']}, eos {t['eos_id']}, "
                  f"end of generation {t['eos_ids']}, adds BOS: {'yes' if t['add_bos'] else 'no'} ({t['source']})")
    return 0
