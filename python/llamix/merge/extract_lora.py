"""LoRA extraction (mergekit-extract-lora's job): a PEFT adapter that turns a base model into
(approximately) a fine-tune of it.

Per 2-D weight of the fine-tune: the delta D = W_ft - W_base (float32) is factored by a truncated
SVD of rank r, D ~ U S V^T, and stored as lora_B = U sqrt(S) (out x r), lora_A = sqrt(S) V^T
(r x in), with lora_alpha = r so that peft's scale alpha / r is 1 (mergekit's default split of the
singular values). The SVD is randomized (Halko, Martinsson & Tropp 2011: a Gaussian sketch of
r + 10 columns, two power iterations with re-orthonormalization, then the exact SVD of the small
projected matrix); matrices whose smaller side is at most r + 10 get an exact SVD. The relative
truncation error ||D - B A||_F / ||D||_F of each tensor is computed exactly (from D, not
estimated) and reported.
Embeddings and the output head are saved whole (modules_to_save) unless embed_lora; 1-D tensors
(norms, biases) that differ from the base are saved whole; identical tensors are left out. An
embedding or head whose vocabulary differs from the base's is saved whole (also with embed_lora),
as mergekit does: the report's ``resized`` and the README say so, since the base's tensor has to
be resized before the adapter applies (llamix's ``model+lora`` refuses it).
Tensors are read, factored and written one at a time; the adapter folder appears atomically.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..formats.safetensors import SafetensorsWriter
from .config import ConfigError
from .kernels import scale as convert
from .output import temporary_folder
from .sources import open_weights, parse_ref, resolve_folder

SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
EMBEDDINGS = ("embed_tokens", "lm_head", "wte", "embed_out")


@dataclass
class ExtractedTensor:
    name: str
    kind: str                 # "lora", "full" or "same" (identical to the base: left out)
    rank: int = 0
    rel_error: float = 0.0    # ||D - B A||_F / ||D||_F (0 for tensors saved whole)


@dataclass
class ExtractReport:
    out: str
    rank: int
    tensors: list[ExtractedTensor] = field(default_factory=list)
    # tensors whose shape differs from the base's (a resized vocabulary): (name, base shape, shape)
    resized: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def worst(self) -> Optional[ExtractedTensor]:
        lora = [t for t in self.tensors if t.kind == "lora"]
        return max(lora, key=lambda t: t.rel_error) if lora else None


def _f32(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a)
    if dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def truncated_svd(d: np.ndarray, rank: int, seed: int = 0, oversample: int = 10, power_iters: int = 2):
    """U (m x k), S (k), Vt (k x n) with k = min(rank, m, n): randomized for large matrices."""
    m, n = d.shape
    k = min(rank, m, n)
    if min(m, n) <= rank + oversample:
        u, s, vt = np.linalg.svd(d.astype(np.float64), full_matrices=False)
        return u[:, :k], s[:k], vt[:k]
    rng = np.random.default_rng(seed)
    width = k + oversample
    q, _ = np.linalg.qr(d @ rng.standard_normal((n, width)).astype(np.float32))
    for _ in range(power_iters):
        z, _ = np.linalg.qr(d.T @ q)
        q, _ = np.linalg.qr(d @ z)
    b = (q.T @ d).astype(np.float64)
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    return (q.astype(np.float64) @ ub[:, :k]), s[:k], vt[:k]


def _relative_residual(d: np.ndarray, us: np.ndarray, vt: np.ndarray) -> float:
    """||D - (U S) Vt||_F / ||D||_F in float64, from the residual itself, a block of rows at a time
    (bounded memory). The closed form ||D||^2 - 2 tr(...) + sum s^2 assumes U orthonormal, which
    the float32 QR of the randomized SVD gives only to ~1e-7: its error, ~sqrt(1e-7) of ||D||,
    swamped small truncation errors (measured: 1.2e-4 reported for an exact rank-2 delta)."""
    rows = max(1, (8 << 20) // max(1, d.shape[1]))
    err2 = norm2 = 0.0
    for r0 in range(0, d.shape[0], rows):
        block = d[r0:r0 + rows].astype(np.float64)
        norm2 += float(np.sum(block * block))
        block -= us[r0:r0 + rows] @ vt
        err2 += float(np.sum(block * block))
    return float(np.sqrt(err2 / norm2)) if norm2 > 0 else 0.0


def extract_lora(base: str, model: str, out: str | os.PathLike, rank: int, *, embed_lora: bool = False,
                 out_dtype: Optional[str] = None, base_dir: Optional[Path] = None, seed: int = 0,
                 progress: Optional[Callable[[float, float, str], None]] = None,
                 overwrite: bool = False) -> ExtractReport:
    """Write a PEFT LoRA adapter of rank `rank` to `out` (a new or empty folder; with `overwrite`,
    an existing one is replaced once the adapter is complete) that takes `base` to `model` (folders
    or Hugging Face repo ids). out_dtype: of the adapter's tensors (default: the fine-tune's).
    Returns each tensor's relative truncation error. Raises ConfigError when the fine-tune equals
    the base (every delta is zero: no adapter to extract)."""
    if rank < 1:
        raise ConfigError(f"--rank must be >= 1, got {rank}")
    base_dir = base_dir or Path.cwd()
    folders = {}
    for what, ref in (("--base", base), ("--model", model)):
        mr = parse_ref(ref, what)
        if mr.lora is not None:
            raise ConfigError(f"{what}: {ref}: a LoRA reference cannot be a base or a fine-tune here")
        folders[what] = resolve_folder(mr.model, base_dir, what)
    if Path(folders["--base"]).resolve() == Path(folders["--model"]).resolve():
        raise ConfigError(f"--model {model}: the fine-tune equals the base (--base {base}): every delta is zero")
    wb, wf = open_weights(folders["--base"], "--base"), open_weights(folders["--model"], "--model")
    out = Path(out)
    if not overwrite and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not an empty folder")
    # plan: which tensors, how, and the adapter's layout (shapes known before any work)
    plan, resized = [], []
    for name in wf.keys():
        shape = tuple(wf.shape(name))
        if wf.dtype(name) not in DTYPES:
            continue
        if name not in wb or tuple(wb.shape(name)) != shape:
            if len(shape) >= 1 and any(e in name for e in EMBEDDINGS):
                plan.append((name, "full", shape))  # e.g. a resized vocabulary: saved whole
                if name in wb:
                    resized.append((name, tuple(wb.shape(name)), shape))
                continue
            raise ConfigError(f"--model: tensor {name} {list(shape)} has no counterpart of the same shape in the base")
        is_embed = any(e in name for e in EMBEDDINGS)
        if len(shape) == 2 and name.endswith(".weight") and (embed_lora or not is_embed):
            plan.append((name, "lora", shape))
        else:
            plan.append((name, "full" if is_embed else "maybe", shape))
    dtype = out_dtype or (DTYPES[wf.dtype(plan[0][0])] if plan else "float32")
    short = SHORT[dtype]
    layout, kept = [], []
    for name, kind, shape in plan:
        if kind == "maybe":  # 1-D and other tensors: saved whole only where they changed
            if np.array_equal(np.asarray(wf.get(name)), np.asarray(wb.get(name))):
                continue
            kind = "full"
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        if kind == "lora":
            k = min(rank, *shape)
            emb = any(e in name for e in ("embed_tokens", "wte", "embed_out"))
            if emb:  # peft's Embedding LoRA: A (r x vocab), B (dim x r), delta = (B A)^T
                layout += [(f"base_model.model.{module}.lora_embedding_A", short, (k, shape[0])),
                           (f"base_model.model.{module}.lora_embedding_B", short, (shape[1], k))]
            else:
                layout += [(f"base_model.model.{module}.lora_A.weight", short, (k, shape[1])),
                           (f"base_model.model.{module}.lora_B.weight", short, (shape[0], k))]
        else:
            layout.append((f"base_model.model.{name}", short, shape))
        kept.append((name, kind, shape, module))
    tmp = temporary_folder(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report = ExtractReport(str(out), rank, resized=resized)
    try:
        writer = SafetensorsWriter(tmp, layout, max_shard_bytes=1 << 62, metadata={"format": "pt"})
        targets, to_save, ranks = set(), set(), {}
        changed = False   # any weight delta not zero
        for i, (name, kind, shape, module) in enumerate(kept):
            ft = _f32(wf.get(name), wf.dtype(name))
            if kind == "full":
                changed = changed or name not in wb or tuple(wb.shape(name)) != shape or \
                    not np.array_equal(ft, _f32(wb.get(name), wb.dtype(name)))
                writer.write(f"base_model.model.{name}", convert(ft, out=dtype))
                to_save.add(module.split(".")[-1])
                report.tensors.append(ExtractedTensor(name, "full"))
            else:
                d = ft - _f32(wb.get(name), wb.dtype(name))
                changed = changed or bool(d.any())
                emb = any(e in name for e in ("embed_tokens", "wte", "embed_out"))
                mat = d.T if emb else d
                u, s, vt = truncated_svd(mat, rank, seed=seed)
                root = np.sqrt(s)
                b_mat, a_mat = u * root, root[:, None] * vt
                rel = _relative_residual(mat, u * s, vt)
                if emb:
                    writer.write(f"base_model.model.{module}.lora_embedding_A", convert(a_mat.astype(np.float32), out=dtype))
                    writer.write(f"base_model.model.{module}.lora_embedding_B", convert(b_mat.astype(np.float32), out=dtype))
                else:
                    writer.write(f"base_model.model.{module}.lora_A.weight", convert(a_mat.astype(np.float32), out=dtype))
                    writer.write(f"base_model.model.{module}.lora_B.weight", convert(b_mat.astype(np.float32), out=dtype))
                targets.add(module.split(".")[-1])
                ranks[module] = len(s)
                report.tensors.append(ExtractedTensor(name, "lora", len(s), rel))
            if progress is not None:
                progress(i + 1, len(kept), name)
        if not changed:
            raise ConfigError(f"--model {model}: the fine-tune equals the base (--base {base}): every delta is zero")
        writer.close()
        os.replace(tmp / "model.safetensors", tmp / "adapter_model.safetensors")
        r = max(ranks.values(), default=rank)
        report.rank = r  # the adapter's rank: the asked one, or less where every matrix is smaller
        different = {m: k for m, k in ranks.items() if k != r}
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r,
                  "rank_pattern": different, "alpha_pattern": different, "target_modules": sorted(targets),
                  "modules_to_save": sorted(to_save) or None, "lora_dropout": 0.0, "fan_in_fan_out": False,
                  "use_rslora": False, "bias": "none", "inference_mode": True,
                  "base_model_name_or_path": str(base)}
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        worst = report.worst()
        lines = ["# LoRA extracted with llamix", "", f"Rank {rank} truncated SVD of the weight deltas of `{model}` "
                 f"against `{base}`."]
        if worst is not None:
            lines.append(f"Largest relative truncation error: {worst.rel_error:.4f} ({worst.name}).")
        for name, was, now in resized:
            lines.append(f"\n> [!WARNING]\n> `{name}` is saved whole with shape {list(now)}; the base's is {list(was)} "
                         "(the vocabulary was resized): resize the base's embeddings to it before applying this "
                         "adapter.")
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
        old = None
        if out.exists() or out.is_symlink():   # an empty folder, or overwrite: set aside, removed once replaced
            old = out.parent / f".{out.name}.llamix-old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
