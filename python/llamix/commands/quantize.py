"""``llamix quantize MODEL OUT.gguf [TYPE] [--type TYPE]``: write any model llamix loads as a GGUF
file (llama-quantize's job; its type names, any case)."""
from __future__ import annotations

import os
import time

from .._runtime import set_threads
from ..errors import ArgumentError
from ..formats.imatrix import quantize_metadata, read_imatrix
from ..export import FILE_TYPES, export_gguf
from ..export.type_rules import TENSOR_TYPES, TypeOverrides, parse_tensor_type
from ..loaders import load_checkpoint
from .common import (MODEL_HELP, TOKENIZER_HELP, UsageError, add_force, add_lora, add_threads, check_output,
                     check_threads, lora_of, lower_choice, progress_bar, quiet_requested)


def add_arguments(p) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("out", help="output .gguf path (written atomically)")
    types = lower_choice(FILE_TYPES)
    p.add_argument("type_pos", nargs="?", type=types, metavar="TYPE",
                   help="file type, as llama-quantize takes it (same as --type)")
    p.add_argument("--type", type=types, default=None, metavar="TYPE",
                   help=f"file type: {', '.join(FILE_TYPES)} (default q4_0)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--pure", action="store_true", help="no Q6_K/Q8_0 output head, no _M mix: one type everywhere")
    tensor_types = lower_choice(TENSOR_TYPES)
    p.add_argument("--output-tensor-type", type=tensor_types, metavar="TYPE", help="type of output.weight")
    p.add_argument("--token-embedding-type", type=tensor_types, metavar="TYPE", help="type of token_embd.weight")
    p.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                   help="type of the tensors whose name PATTERN (a regular expression) matches, e.g. attn_v=q8_0; "
                        "repeatable, the first match wins (as llama-quantize)")
    p.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight in its source type")
    p.add_argument("--imatrix", metavar="FILE",
                   help="importance matrix (llama-imatrix's .gguf or legacy .dat, or llamix imatrix's): weights "
                        "each quantizer's error by the mean squared activation of each column")
    p.add_argument("--allow-requantize", action="store_true",
                   help="convert tensors that are quantized already to another type (a second rounding error)")
    add_lora(p, "LoRA adapter folded into the weights before they are written (llama-export-lora's job): a GGUF "
                "adapter file (llama.cpp's) or a PEFT adapter folder; one adapter")
    add_force(p)
    add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _input_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(e.stat().st_size for e in os.scandir(path) if e.name.endswith((".safetensors", ".bin")))
    return os.path.getsize(path)


def run(args) -> int:
    check_threads(args)
    if args.type_pos and args.type and args.type_pos != args.type:
        raise UsageError(f"--type {args.type} and the positional TYPE {args.type_pos} disagree")
    qtype = args.type or args.type_pos or "q4_0"
    lora = lora_of(args)
    check_output(args.out, [args.model, args.tokenizer, args.imatrix, lora and lora[0]], args.force, file=True)
    try:
        overrides = TypeOverrides(output_tensor_type=args.output_tensor_type,
                                  token_embedding_type=args.token_embedding_type,
                                  tensor_types=tuple(parse_tensor_type(t) for t in args.tensor_type),
                                  leave_output_tensor=args.leave_output_tensor, pure=args.pure)
    except ArgumentError as e:
        raise UsageError(str(e)) from None
    imatrix, metadata = None, []
    if args.imatrix:
        if not os.path.isfile(args.imatrix):
            raise UsageError(f"--imatrix {args.imatrix}: " + ("is a folder, not an importance matrix file"
                                                              if os.path.isdir(args.imatrix) else "no such file"))
        im = read_imatrix(args.imatrix)
        imatrix = im.means()
        metadata = quantize_metadata(args.imatrix, im)
    if args.threads:
        set_threads(args.threads)
    t0 = time.perf_counter()
    model, tokenizer = args.model, args.tokenizer
    if lora is not None:   # the weights with the adapter folded in (block types quantized again), then written
        model, tokenizer = load_checkpoint(args.model, tokenizer=args.tokenizer, lora=lora[0], lora_scale=lora[1]), None
    with progress_bar(f"quantize {os.path.basename(args.out)}", quiet=quiet_requested(args)) as bar:
        try:
            r = export_gguf(model, args.out, qtype, tokenizer=tokenizer, pure=args.pure, progress=bar,
                            allow_requantize=args.allow_requantize, overrides=overrides, imatrix=imatrix,
                            metadata=metadata)
        except ArgumentError as e:   # an entry that does not fit the model: name the file it came from
            if args.imatrix and str(e).startswith("imatrix: "):
                raise UsageError(f"--imatrix {args.imatrix}: {str(e)[len('imatrix: '):]}") from None
            raise
    dt = time.perf_counter() - t0
    size = os.path.getsize(args.out)
    counts = ", ".join(f"{n} {t}" for t, n in sorted(r.type_counts().items()))
    print(f"wrote {args.out}: {qtype}, {size / 1e6:.2f} MB, {r.bits_per_weight:.3f} bits/weight over "
          f"{r.n_params / 1e6:.2f} M weights ({counts})")
    if r.fallback_note():
        print(f"note: {r.fallback_note()}")
    print(f"{dt:.2f} s, {_input_bytes(args.model) / dt / 1e9:.3f} GB/s of input")
    return 0
