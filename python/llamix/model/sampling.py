"""Token sampling, in llama.cpp's order: repetition, frequency and presence penalties, then top-k, top-p (nucleus, Holtzman
et al. 2019, https://arxiv.org/abs/1904.09751) and min-p (Nguyen et al. 2024,
https://arxiv.org/abs/2407.01082) filters on the softmax of the raw logits, then temperature on
the surviving logits, then one draw. ``temperature <= 0`` is greedy (argmax after the penalty),
and so is ``top_p = 0`` (only the most probable token reaches the prefix), as in llama.cpp.
Tokens whose logit is -inf (masked by a grammar) are never candidates.

Definitions (p = softmax(logits), tokens sorted by decreasing p, ties by lower id):
- top-k (k > 0): keep the k most probable tokens.
- top-p (< 1): keep the shortest prefix whose probability (renormalised after top-k) reaches top_p.
- min-p (> 0): keep tokens with p >= min_p * max(p).
- temperature: the kept tokens are drawn with probability proportional to exp(logit / T).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ArgumentError, check_value


class Sampler:
    def __init__(self, temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int | None = None, *,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0):
        # llama.cpp's meanings, which llama-cpp-python and llama-server pass through: a temperature
        # <= 0 is greedy, a top_k <= 0 is off
        temperature = max(check_value(temperature, float, "temperature", error=ArgumentError), 0.0)
        top_k = max(check_value(top_k, int, "top_k", error=ArgumentError), 0)
        top_p = check_value(top_p, float, "top_p (0: greedy)", lo=0.0, hi=1.0, error=ArgumentError)
        min_p = check_value(min_p, float, "min_p", lo=0.0, hi=1.0, error=ArgumentError)
        if not check_value(repeat_penalty, float, "repeat_penalty", lo=0.0, error=ArgumentError) > 0:
            raise ArgumentError(f"repeat_penalty must be > 0, got {repeat_penalty}")
        self.temperature, self.top_k, self.top_p, self.min_p = float(temperature), int(top_k), float(top_p), float(min_p)
        repeat_last_n = check_value(repeat_last_n, int, "repeat_last_n (0: off, -1: the whole context)", lo=-1,
                                    error=ArgumentError)
        self.repeat_penalty, self.repeat_last_n = float(repeat_penalty), int(repeat_last_n)
        frequency_penalty = check_value(frequency_penalty, float, "frequency_penalty", error=ArgumentError)
        presence_penalty = check_value(presence_penalty, float, "presence_penalty", error=ArgumentError)
        self.frequency_penalty, self.presence_penalty = float(frequency_penalty), float(presence_penalty)
        if seed is not None:   # -1 is llama.cpp's and llama-cpp-python's "random seed"
            seed = check_value(seed, int, "seed (-1: random)", lo=-1, error=ArgumentError)
        self.rng = np.random.default_rng(None if seed in (None, -1) else seed)

    def penalize(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Penalties on the tokens of the last ``repeat_last_n`` of ``history`` (-1: all of it), as llama.cpp's
        penalties sampler: the CTRL-style repetition penalty (Keskar et al. 2019; positive logits
        divided by it, negative ones multiplied), then OpenAI's frequency and presence penalties
        (``logit -= count * frequency_penalty + presence_penalty``)."""
        if (self.repeat_penalty == 1.0 and self.frequency_penalty == 0.0 and self.presence_penalty == 0.0) \
                or not len(history) or self.repeat_last_n == 0:
            return logits
        window = history if self.repeat_last_n < 0 else history[-self.repeat_last_n:]
        ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
        logits = logits.copy()
        v = logits[ids]
        if self.repeat_penalty != 1.0:
            v = np.where(v > 0, v / self.repeat_penalty, v * self.repeat_penalty)
        logits[ids] = v - (counts * self.frequency_penalty + self.presence_penalty)
        return logits

    def candidates(self, logits: np.ndarray) -> np.ndarray:
        """Token ids that survive top-k, top-p and min-p, most probable first."""
        n = logits.shape[0]
        if 0 < self.top_k < n:
            idx = np.argpartition(-logits, self.top_k - 1)[:self.top_k]
        else:
            idx = np.arange(n)
        idx = idx[np.lexsort((idx, -logits[idx]))]  # by decreasing logit, ties by id
        if not np.isfinite(logits[idx[-1]]):  # masked tokens (-inf) are no candidates
            idx = idx[:max(int(np.count_nonzero(np.isfinite(logits[idx]))), 1)]
        p = np.exp(logits[idx].astype(np.float64) - logits[idx[0]])
        p /= p.sum()
        keep = n
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(p), self.top_p - 1e-12)) + 1
        if self.min_p > 0.0:
            keep = min(keep, int(np.count_nonzero(p >= self.min_p * p[0])))
        return idx[:max(keep, 1)]

    def probabilities(self, logits: np.ndarray, history: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(candidate ids, their sampling probabilities)."""
        logits = self.penalize(np.asarray(logits, dtype=np.float32), history)
        if self.temperature <= 0:
            return np.array([int(np.argmax(logits))]), np.array([1.0])
        idx = self.candidates(logits)
        z = logits[idx].astype(np.float64) / self.temperature
        p = np.exp(z - z.max())
        return idx, p / p.sum()

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        idx, p = self.probabilities(logits, history)
        if len(idx) == 1:
            return int(idx[0])
        return int(idx[min(int(np.searchsorted(np.cumsum(p), self.rng.random() * 1.0)), len(idx) - 1)])
