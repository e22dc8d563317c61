"""A merge-search problem whose optimum is known, built from stories260K (a trained model).

theta* = stories260K. The base is theta* + D1 + D2, with D1 random noise on the attention weights
and D2 on the MLP weights (each of relative size SIGMA). Two "fine-tunes" undo part of the damage
along known task vectors:

    ft_a = base + tau_a,  tau_a = -D1 / W_A
    ft_b = base + tau_b,  tau_b = -D2 / W_B

so task_arithmetic's merge base + w_a tau_a + w_b tau_b = theta* + (1 - w_a / W_A) D1 + (1 - w_b / W_B) D2
is the trained model exactly at (w_a, w_b) = (W_A, W_B), and damaged anywhere else, along two
independent directions. The held-out perplexity is lowest there (up to the trained model not
being the exact minimiser of one text's perplexity, measured: see test_evolve.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

W_A, W_B = 0.4, 0.7
SIGMA = 1.2
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _save(folder: Path, src: Path, tensors: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        if (src / f).is_file():
            shutil.copy(src / f, folder / f)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def make_problem(assets: Path, out: Path, seed: int = 0) -> dict:
    """Folders base/, ft_a/, ft_b/ (and the trained model's path) under ``out``."""
    src = assets / "stories260K_hf"
    theta = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(seed)
    d1, d2 = {}, {}
    for name, w in theta.items():
        if w.ndim != 2:
            continue
        noise = rng.standard_normal(w.shape).astype(np.float32) * np.float32(SIGMA * w.std())
        if any(k in name for k in ATTN):
            d1[name] = noise
        elif any(k in name for k in MLP):
            d2[name] = noise
    base = {n: w + d1.get(n, 0) + d2.get(n, 0) for n, w in theta.items()}
    ft_a = {n: w - d1[n] / np.float32(W_A) if n in d1 else w for n, w in base.items()}
    ft_b = {n: w - d2[n] / np.float32(W_B) if n in d2 else w for n, w in base.items()}
    return {"theta": src, "base": _save(out / "base", src, base), "ft_a": _save(out / "ft_a", src, ft_a),
            "ft_b": _save(out / "ft_b", src, ft_b)}


def write_tasks(path: Path, n: int = 12, seed: int = 0) -> Path:
    """Multiple-choice questions from a story text: the right continuation of a sentence, or a
    continuation taken from elsewhere."""
    text = (Path(__file__).parent / "data" / "stories_eval.txt").read_text()
    words = text.split()
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        at = int(rng.integers(10, len(words) - 20))
        wrong = int(rng.integers(10, len(words) - 20))
        right_cont, wrong_cont = " ".join(words[at:at + 3]), " ".join(words[wrong:wrong + 3])
        answer = int(rng.integers(0, 2))
        choices = [right_cont, wrong_cont] if answer == 0 else [wrong_cont, right_cont]
        lines.append(json.dumps({"context": " ".join(words[at - 10:at]), "choices": choices, "answer": answer}))
    path.write_text("\n".join(lines) + "\n")
    return path
