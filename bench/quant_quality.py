"""Quantization quality and speed, llamix against llama.cpp's quantizer on the same f16 model.

For Q3_K_M, Q4_K_M and IQ4_XS, each without and with the same importance matrix (computed once
by ``llamix imatrix``'s code over calibration tokens and given to both quantizers): bits per
weight, mean KL(f16 || quantized) and top-1 agreement on held-out tokens, and quantizing speed
(GB/s of f16 input). Every file, llamix's and llama.cpp's, is evaluated by llama.cpp (in a child
process), so only the quantizers differ.

    flock /work/bench.lock python bench/quant_quality.py [--model F16.gguf] [-f TEXT] [--calib TEXT] [-c 256]
    flock /work/bench.lock python bench/quant_quality.py --model F16.gguf --speed-only q3_k_m [--rounds 2]
    python bench/quant_quality.py --model F16.gguf --types q3_k_m --quality-only   (one type's rows only)

Without --model an f16 random-weight model with rows of 256 is made (its KL figures are small:
random weights give flat distributions; pass a real model's f16 file for meaningful ones, or the
TinyLlama-shaped one bench/synth_tinyllama.py writes). The speed columns are GB of f16 input per
second, wall clock and per CPU-second of the quantizing process (steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "bench"))

FTYPES = ["q3_k_m", "q4_k_m", "iq4_xs"]


# --- the benchmark -----------------------------------------------------------------------------
def bits_per_weight(path) -> float:
    from llamix.formats.gguf import GGUFReader

    r = GGUFReader(path)
    return 8.0 * sum(t.nbytes for t in r.tensors.values()) / sum(t.n_elements for t in r.tensors.values())


def speed_only(args) -> None:
    """Wall and CPU seconds of llama_model_quantize and of export_gguf on the same f16 file, in turn."""
    from llamix._runtime import set_threads
    from llamix.export import export_gguf
    from lcpp_child import Child, lcpp_quantize_times

    set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="quant_speed."))
    src = Path(args.model)
    with Child(timeout=3600) as child:
        for ft in args.speed_only.split(","):
            for _ in range(args.rounds):
                t_l, c_l = child.call(lcpp_quantize_times, src, tmp / "lcpp.gguf", ft, None, args.threads)
                t0, c0 = time.perf_counter(), time.process_time()
                export_gguf(src, tmp / "llamix.gguf", ft, progress=False)
                t_o, c_o = time.perf_counter() - t0, time.process_time() - c0
                print(f"{ft}: llama.cpp {t_l:.1f} s ({c_l:.1f} CPU-s), llamix {t_o:.1f} s ({c_o:.1f} CPU-s): "
                      f"speed llamix/llama.cpp {t_l / t_o:.2f}x (per CPU-second {c_l / c_o:.2f}x)", flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="an f16 GGUF (default: a random-weight model with rows of 256)")
    ap.add_argument("-f", "--file", help="held-out text (default: random tokens)")
    ap.add_argument("--calib", help="calibration text for the imatrix (default: the first 40%% of -f's tokens, "
                                    "the rest held out)")
    ap.add_argument("-c", "--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=4, help="windows for the imatrix and for KL each")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--quality-only", action="store_true",
                    help="no speed column (for runs outside the bench lock: KL and sizes do not depend on timing)")
    ap.add_argument("--speed-only", metavar="TYPES",
                    help="only time quantizing (no imatrix, no KL): these comma-separated types, --rounds times each, "
                         "llama.cpp then llamix")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--types", default=",".join(FTYPES),
                    help="comma-separated types for the quality table, each without and with the imatrix "
                         f"(default: {','.join(FTYPES)})")
    args = ap.parse_args()
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    if not types or any(t not in FTYPES for t in types):
        ap.error(f"--types: {args.types!r}: choose from {', '.join(FTYPES)}")
    if args.speed_only:
        return speed_only(args)

    import llamix
    from llamix._runtime import set_threads
    from llamix.eval.imatrix import compute_imatrix
    from llamix.export import export_gguf
    from lcpp_child import Child, lcpp_kl_top1, lcpp_quantize_times, lcpp_set_base

    set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="quant_quality."))
    src = Path(args.model) if args.model else tmp / "random_f16.gguf"
    if not args.model:
        tok = llamix.Tokenizer.from_file(ROOT.parent / "shared" / "assets" / "stories260K" / "tok512.model")
        export_gguf(llamix.random_checkpoint("tiny", tokenizer=tok, lazy=True, n_layers=8, n_heads=8, n_kv_heads=2,
                                             dim=512, hidden_dim=1536), src, "f16")
    m = llamix.load(src, n_ctx=args.ctx)
    ctx, n = args.ctx, args.chunks
    if args.file:
        ids = m.tokenize(Path(args.file).read_text(encoding="utf-8"))
        cut = 0 if args.calib else int(0.4 * len(ids))
        calib, held = ids[:cut], ids[cut:]
        if args.calib:
            calib = m.tokenize(Path(args.calib).read_text(encoding="utf-8"))
    else:
        rng = np.random.default_rng(0)
        calib = rng.integers(3, m.config.vocab_size, size=ctx * n).tolist()
        held = rng.integers(3, m.config.vocab_size, size=ctx * n).tolist()
    im = compute_imatrix(m, calib, ctx, chunks=n)
    means = im.means()
    bos = m.tokenizer.bos_id if m.tokenizer is not None and m.tokenizer.add_bos else None
    windows = [np.asarray(held[i * ctx:(i + 1) * ctx]) for i in range(min(n, len(held) // ctx))]
    for w in windows:
        if bos is not None:
            w[0] = bos
    in_bytes = src.stat().st_size
    del m

    with Child(timeout=3600) as child:
        child.call(lcpp_set_base, src, windows, ctx, args.threads)
        rows = []
        for ft in types:
            for weighted in (False, True):
                tag = f"{ft}{'_im' if weighted else ''}"
                theirs, ours = tmp / f"lcpp_{tag}.gguf", tmp / f"llamix_{tag}.gguf"
                t_theirs, c_theirs = child.call(lcpp_quantize_times, src, theirs, ft, means if weighted else None,
                                                args.threads)
                t0, c0 = time.perf_counter(), time.process_time()
                export_gguf(src, ours, ft, imatrix=means if weighted else None, progress=False)
                t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
                for who, path, dt, ct in (("llama.cpp", theirs, t_theirs, c_theirs), ("llamix", ours, t_ours, c_ours)):
                    kl, top1 = child.call(lcpp_kl_top1, path, windows, ctx, args.threads)
                    rows.append((ft.upper(), "yes" if weighted else "no", who, bits_per_weight(path), kl, top1,
                                 in_bytes / dt / 1e9, in_bytes / ct / 1e9))
                    path.unlink()
                print(f"{ft} imatrix={weighted}: done", file=sys.stderr, flush=True)
    name = Path(args.model).name if args.model else "random-weight f16 (8 layers, dim 512, hidden 1536, GQA 4)"
    print(f"model: {name}; {len(windows)} held-out windows of {ctx} tokens; imatrix from {n} chunks; "
          f"{args.threads} threads; KL and top-1 of llama.cpp's logits on each file vs the f16 file")
    print("| type | imatrix | quantizer | bits/weight | mean KL | top-1 | quantize GB/s (f16 input) | "
          "GB per CPU-second |")
    print("|---|---|---|---|---|---|---|---|")
    for ft, w, who, bpw, kl, top1, gbs, gbc in rows:
        speed = "— | —" if args.quality_only else f"{gbs:.3f} | {gbc:.3f}"
        print(f"| {ft} | {w} | {who} | {bpw:.3f} | {kl:.6f} | {100 * top1:.2f} % | {speed} |")
    by = {(r[0], r[1], r[2]): r for r in rows}
    for ft in types:
        for w in ("no", "yes"):
            a, b = by[(ft.upper(), w, "llamix")], by[(ft.upper(), w, "llama.cpp")]
            speed = "" if args.quality_only else (f", quantize speed llamix/llama.cpp {a[6] / b[6]:.2f}x "
                                                  f"(per CPU-second {a[7] / b[7]:.2f}x)")
            print(f"{ft.upper()} imatrix={w}: KL llamix/llama.cpp {a[4] / max(b[4], 1e-12):.3f}{speed}")


if __name__ == "__main__":
    main()
