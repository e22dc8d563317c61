"""``llamix info MODEL``: hyper-parameters, tensor types and sizes, tokenizer, and the CPU's kernels."""
from __future__ import annotations

import json
from collections import Counter

from .._runtime import cpu_info
from ..loaders import load_checkpoint
from .common import MODEL_HELP


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help=MODEL_HELP + " (omit for CPU info only)")
    p.add_argument("--tokenizer", help="SentencePiece .model file")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    out: dict = {"cpu": cpu_info()}
    if args.model:
        ck = load_checkpoint(args.model, tokenizer=args.tokenizer)
        types = Counter(getattr(t, "qtype", "f32") for t in ck.tensors.values())
        out["model"] = {
            "source": ck.source,
            "config": {k: v for k, v in ck.config.to_dict().items() if k != "extra"},
            "tensor_types": dict(types),
            "n_params": int(sum(t.shape[0] * t.shape[1] if hasattr(t, "qtype") else t.size for t in ck.tensors.values())),
            "bytes": int(sum(t.nbytes for t in ck.tensors.values())),
            "tokenizer": None if ck.tokenizer is None else {
                "source": ck.tokenizer.source, "vocab_size": ck.tokenizer.vocab_size,
                "bos_id": ck.tokenizer.bos_id, "eos_id": ck.tokenizer.eos_id},
        }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    c = out["cpu"]
    print(f"cpu: kernels {c['isa']} (available {', '.join(c['available_isas'])}), threads {c['threads']}, "
          f"physical cores {c['physical_cores']}")
    if args.model:
        m = out["model"]
        print(f"model: {m['source']}")
        for k, v in m["config"].items():
            print(f"  {k:16} {v}")
        print(f"  {'parameters':16} {m['n_params'] / 1e6:.2f} M, {m['bytes'] / 2**20:.1f} MiB")
        print(f"  {'tensor types':16} " + ", ".join(f"{k}: {v}" for k, v in sorted(m["tensor_types"].items())))
        t = m["tokenizer"]
        print(f"  {'tokenizer':16} " + ("none (pass --tokenizer)" if t is None else
                                       f"{t['vocab_size']} pieces, bos {t['bos_id']}, eos {t['eos_id']} ({t['source']})"))
    return 0
