"""What a candidate merge is scored on, and the scoring: merge, quantize and score in memory.

```yaml
objective:
  perplexity: heldout.txt   # held-out text: perplexity as llama-perplexity computes it (see perplexity.py)
  n_ctx: 128                # its window (default: the smaller of 512 and the model's context)
  tasks: tasks.jsonl        # multiple-choice questions scored by log-likelihood (see tasks.py)
  metric: acc               # acc or acc_norm
  target_delimiter: " "     # between a question and each choice, as lm-eval's default
  qtype: q8_0               # the weight type candidates are evaluated in (q8_0, q4_0, f16, f32)
```

The search minimises one number, the loss: ``ln(perplexity)`` (the mean negative log-likelihood
per token, nats) when there is a text, minus the task accuracy (0..1) when there are tasks. Each
process keeps the tokenizer, the tokenized text and the questions of the objectives it has
scored, so a worker reads them once, by path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .._runtime import set_threads
from ..errors import ConfigError
from ..merge.config import load_config
from ..merge.plan import open_model
from ..tokenizer import Tokenizer
from .candidate import EVAL_TYPES, merged_checkpoint
from .perplexity import perplexity, text_tokens
from .tasks import encode_pair, load_tasks, score_tasks
from ..model import Model

FIELDS = {"perplexity", "n_ctx", "tasks", "metric", "target_delimiter", "qtype"}


@dataclass(frozen=True)
class Objective:
    perplexity: str | None = None     # path of the held-out text
    n_ctx: int | None = None
    tasks: str | None = None          # path of the JSONL questions
    metric: str = "acc"
    target_delimiter: str = " "
    qtype: str = "q8_0"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("perplexity", "n_ctx", "tasks", "metric", "target_delimiter", "qtype")
                if getattr(self, k) is not None}


def parse_objective(data, base_dir: Path, resolve) -> Objective:
    """The ``objective`` mapping checked (ConfigError naming ``objective.FIELD``); paths resolved
    by ``resolve(path, base_dir)`` and required to exist."""
    if not isinstance(data, dict):
        raise ConfigError("objective: expected a mapping with perplexity: TEXT and/or tasks: JSONL")
    for key in data:
        if key not in FIELDS:
            raise ConfigError(f"objective.{key}: unknown field (known: {', '.join(sorted(FIELDS))})")
    if data.get("perplexity") is None and data.get("tasks") is None:
        raise ConfigError("objective: give perplexity: TEXT_FILE and/or tasks: JSONL_FILE")
    paths = {}
    for key in ("perplexity", "tasks"):
        v = data.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or not v:
            raise ConfigError(f"objective.{key}: expected a file path")
        p = Path(resolve(v, base_dir))
        if not p.is_file():
            raise ConfigError(f"objective.{key}: {v}: no such file")
        paths[key] = str(p)
    n_ctx = data.get("n_ctx")
    if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 4):
        raise ConfigError(f"objective.n_ctx: expected an integer >= 4, got {n_ctx!r}")
    metric = data.get("metric", "acc")
    if metric not in ("acc", "acc_norm"):
        raise ConfigError(f"objective.metric: expected acc or acc_norm, got {metric!r}")
    delim = data.get("target_delimiter", " ")
    if not isinstance(delim, str):
        raise ConfigError("objective.target_delimiter: expected a string")
    qtype = str(data.get("qtype", "q8_0")).lower()
    if qtype not in EVAL_TYPES:
        raise ConfigError(f"objective.qtype: expected one of {', '.join(EVAL_TYPES)}, got {data.get('qtype')!r}")
    if "tasks" in paths:
        load_tasks(paths["tasks"])  # checked now, not in a worker
    return Objective(paths.get("perplexity"), n_ctx, paths.get("tasks"), metric, delim, qtype)


@dataclass
class Score:
    loss: float
    ppl: float | None = None
    acc: float | None = None   # the objective's metric (acc or acc_norm)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "ppl": self.ppl, "acc": self.acc}


# Per process: what has been read for an objective (tokenizer folder, objective) -> data.
_CACHE: dict = {}


def _prepared(objective: Objective, tokenizer_folder: Path):
    key = (str(tokenizer_folder), objective)
    if key not in _CACHE:
        tok = Tokenizer.from_file(tokenizer_folder)
        tokens = None
        if objective.perplexity is not None:
            tokens = text_tokens(tok, Path(objective.perplexity).read_text(encoding="utf-8"))
        tasks = load_tasks(objective.tasks) if objective.tasks is not None else None
        longest = max((len(c) + len(x) - 1 for q in tasks for ch in q.choices
                       for c, x in [encode_pair(tok, q.context, objective.target_delimiter + ch)]), default=0) \
            if tasks else 0
        _CACHE.clear()  # one objective at a time per worker
        _CACHE[key] = (tok, tokens, tasks, longest)
    return _CACHE[key]


def score_merge(merge_config: dict, objective: Objective, *, seed: int = 0, n_threads: int | None = None) -> Score:
    """Merge (mergekit config dict), quantize to ``objective.qtype`` and score, in memory.

    ``seed``: of the merge's random masks. ``n_threads``: compute threads of the merge and the
    model. A non-finite perplexity (a merge that broke the model) scores an infinite loss."""
    if n_threads:
        set_threads(n_threads)
    cfg = load_config(merge_config)
    folder = open_model(cfg.base_model or cfg.referenced_models()[0], cfg.base_dir, "base_model").path
    tok, tokens, tasks, longest = _prepared(objective, folder)
    ck = merged_checkpoint(cfg, objective.qtype, seed=seed, tokenizer=tok)
    n_ctx = int(objective.n_ctx or min(512, ck.config.context_length))
    model = Model(ck, n_ctx=max(n_ctx, longest), n_threads=n_threads)
    loss, score = 0.0, Score(0.0)
    if tokens is not None:
        score.ppl = perplexity(model, tokens, n_ctx=n_ctx).ppl
        loss += math.log(score.ppl) if math.isfinite(score.ppl) and score.ppl > 0 else math.inf
    if tasks is not None:
        r = score_tasks(model, tasks, objective.target_delimiter)
        score.acc = r.acc if objective.metric == "acc" else r.acc_norm
        loss -= score.acc
    score.loss = loss if math.isfinite(loss) else math.inf
    return score
