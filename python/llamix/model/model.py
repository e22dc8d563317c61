"""``llamix.Model``: a loaded LLaMA-family model with a KV cache, logits, sampling and streaming.

The forward pass is one GIL-released C++ call per batch of tokens (``_C.Transformer``); this
file keeps structure, bookkeeping and sampling.
"""
from __future__ import annotations

import fnmatch
import inspect
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .._runtime import _C
from .._runtime import attn_precision as _attn_precision
from .._runtime import idle_blas_threads, set_threads
from ..chat_format import check_format_name
from ..config import ModelConfig
from ..errors import ArgumentError, check_value
from ..formats.names import LAYER_TENSORS, layer_tensor_names
from ..loaders import Checkpoint, load_checkpoint
from ..formats.hub_cache import hub_cache_dir, hub_offline
from ..quant import QuantizedTensor, qtype_info
from ..quant.qtypes import BY_GGUF_ID
from ..tokenizer import Tokenizer, check_text, check_token_ids
from .api import CompletionAPI
from .engine import Request, Step
from .sampling import Sampler

DEFAULT_N_CTX = 2048  # KV cache positions when n_ctx is not given (capped by the training context)
N_BATCH = 512         # prompt tokens per forward call


@dataclass
class Timings:
    """Where the last generation's time went, as llama.cpp reports it (llama_perf_context)."""
    prompt_tokens: int = 0   # prompt tokens evaluated (a prefix still in the cache is not)
    prompt_s: float = 0.0
    eval_tokens: int = 0     # single-token decode steps
    eval_s: float = 0.0


KV_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0")


def kv_cache_type(name: str, t, head_dim: int) -> str:
    if t not in KV_CACHE_TYPES:
        raise ArgumentError(f"{name}: KV cache type must be one of {', '.join(KV_CACHE_TYPES)}, got {t!r}")
    if t.startswith("q") and head_dim % 32:
        why = f"needs head_dim to be a multiple of 32 (its block size); this model's head_dim is {head_dim}"
        flag = {"kv_cache_k": "-ctk/--cache-type-k", "kv_cache_v": "-ctv/--cache-type-v"}.get(name, "--kv-cache")
        raise ArgumentError(f"{name}={t!r} {why}", cli=f"{flag} {t} {why}")
    return t


def _kv_cache_bytes(n_ctx: int, c: ModelConfig, k: str, v: str) -> int:
    return n_ctx * c.n_layers * (qtype_info(k).row_bytes(c.kv_dim) + qtype_info(v).row_bytes(c.kv_dim))


def _available_memory() -> int | None:
    """Bytes of memory a new allocation can take without swapping (Linux: MemAvailable; else the
    physical memory; None if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _kv_memory_error(n_ctx: int, c: ModelConfig, k: str, v: str, available: int | None) -> ArgumentError:
    need = _kv_cache_bytes(n_ctx, c, k, v)
    have = f"the {available / 1e9:.1f} GB of memory available" if available is not None else "the memory available"
    what = (f"the KV cache needs {need / 1e9:.1f} GB ({c.n_layers} layers x {n_ctx} positions x {c.kv_dim} keys and "
            f"values, {k}/{v}), more than {have}; give a smaller context, or a quantized cache")
    return ArgumentError(f"n_ctx {n_ctx}: {what} (kv_cache_k / kv_cache_v 'q8_0')",
                         cli=f"-c {n_ctx}: {what} (-ctk / -ctv q8_0)")


def _check_kv_memory(n_ctx: int, c: ModelConfig, k: str, v: str) -> None:
    """Refuse a KV cache larger than the memory available: it would fail to allocate, or be
    committed page by page until the system kills the process."""
    available = _available_memory()
    if available is not None and _kv_cache_bytes(n_ctx, c, k, v) > available:
        raise _kv_memory_error(n_ctx, c, k, v, available)


def n_threads_arg(n_threads) -> int | None:
    """``n_threads`` checked: None (the default), or an integer; a negative one is the default
    too (0: one per physical core), as llama.cpp's ``-t`` and the command line's take it."""
    if n_threads is None:
        return None
    n = check_value(n_threads, int, "n_threads (<= 0: one per physical core)", error=ArgumentError)
    return max(n, 0)


class Model(CompletionAPI):
    """A model ready to run: weights prepared for the kernels and a KV cache of ``n_ctx`` positions.
    Build with :func:`llamix.load` (a file) or ``Model(checkpoint)`` (e.g. a random-weight one).

    ``n_threads``: compute threads (default: one per physical core; ``threads`` is an alias).
    ``kv_cache``: the KV cache's element type, ``"f32"``, ``"f16"``, ``"q8_0"`` or ``"q4_0"``
    (llama.cpp's ``-ctk/-ctv`` names; the quantized ones need ``head_dim % 32 == 0``), for keys
    and values; ``kv_cache_k`` / ``kv_cache_v`` set them apart (``None``: ``kv_cache``). Keys and
    values are quantized as tokens are appended; see docs/PERFORMANCE.md for their perplexity
    and KL divergence against the float32 cache. ``checkpoint`` is what the model runs;
    ``tensors`` maps GGUF tensor names (``token_embd.weight``, ``blk.0.attn_q.weight``, ...) to
    :class:`QuantizedTensor` (2-D weights; q/k rows in the adjacent-pair RoPE order of GGUF) or
    float32 arrays (norms): the model exactly as it computes, e.g. for export.
    ``n_ctx``: KV cache positions (``None``: the training context, at most 2048; 0: the training
    context, as llama.cpp reads 0).
    ``chat_format``: the chat template's name for :meth:`create_chat_completion` (``None``: the
    checkpoint's own template, else a built-in format its vocabulary points to; see
    :mod:`llamix.chat_format`). ``attn_precision``: the attention's arithmetic, ``"auto"``
    (default: ``"bf16"`` where the CPU has AMX tiles, else ``"f32"``), ``"f32"`` (float32 products)
    or ``"bf16"`` (q, keys, probabilities and values rounded to bf16, float32 sums, as AMX's
    TDPBF16PS computes them, on any CPU; the softmax stays float32); its accuracy against f32 is in
    docs/PERFORMANCE.md. The OpenAI-style methods (``create_completion``,
    ``create_chat_completion``, ``create_embedding``, ``embed``) come from :class:`CompletionAPI`.
    ``seed``: as llama-cpp-python's ``Llama(seed=...)``, the sampling of calls that give no
    ``seed`` of their own is drawn from it, so a program's whole run is reproducible (``None`` or
    -1: random).
    """

    def __init__(self, checkpoint: Checkpoint, n_ctx: int | None = None, n_threads: int | None = None,
                 kv_cache: str = "f32", *, threads: int | None = None, chat_format: str | None = None,
                 kv_cache_k: str | None = None, kv_cache_v: str | None = None, attn_precision: str = "auto",
                 seed: int | None = None):
        self.checkpoint = checkpoint
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < -1):
            raise ArgumentError(f"seed must be an integer >= -1 (-1: random), got {seed!r}")
        # llama-cpp-python's Llama(seed=...): the calls that give no seed draw theirs from it
        self._seeds = None if seed in (None, -1) else np.random.default_rng(int(seed))
        self.config: ModelConfig = checkpoint.config
        self.tokenizer: Tokenizer | None = checkpoint.tokenizer
        self.tensors: dict[str, QuantizedTensor | np.ndarray] = checkpoint.tensors
        self.rope_freqs = checkpoint.rope_freqs
        self.source = checkpoint.source
        n_threads = n_threads_arg(threads if n_threads is None else n_threads)
        c = self.config
        if n_ctx is None:
            n_ctx = min(c.context_length, DEFAULT_N_CTX)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, (int, np.integer)) or n_ctx < 0:
            raise ArgumentError(f"n_ctx must be a positive integer (or 0: the model's training context), got {n_ctx!r}")
        if n_ctx == 0:   # llama.cpp's and llama-cpp-python's 0: the context the model was trained with
            n_ctx = c.context_length
        self.n_ctx = int(n_ctx)
        self.kv_cache_k, self.kv_cache_v = (kv_cache_type(name, t or kv_cache, c.head_dim)
                                            for name, t in (("kv_cache_k", kv_cache_k), ("kv_cache_v", kv_cache_v)))
        self.attn_precision = _attn_precision(attn_precision)  # "f32" or "bf16" ("auto" resolved)
        _check_kv_memory(self.n_ctx, c, self.kv_cache_k, self.kv_cache_v)   # before the weights are prepared
        if n_threads is not None:
            set_threads(n_threads)
        self.inv_freq = c.rope_tables(self.rope_freqs)
        t = _C.Transformer(c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size,
                           float(c.rms_eps), self.inv_freq, embed_scale=float(c.embed_scale),
                           attn_scale=float(c.attn_scale or 0.0), activation=c.activation)
        spec = lambda name: (self.tensors[name].data, self.tensors[name].info.gguf_id)  # noqa: E731
        t.set_embedding(spec("token_embd.weight"))
        t.set_output(self.tensors["output_norm.weight"],
                     spec("token_embd.weight" if c.tie_embeddings else "output.weight"))
        optional = set(layer_tensor_names(c))  # the architecture's optional tensors; others are None
        for i in range(c.n_layers):
            b = f"blk.{i}."
            opt = lambda name: self.tensors[b + name] if name in optional else None  # noqa: E731
            t.add_layer(self.tensors[b + "attn_norm.weight"], self.tensors[b + "ffn_norm.weight"],
                        *(spec(b + n + ".weight") for n in LAYER_TENSORS if not n.endswith("norm")),
                        bq=opt("attn_q.bias"), bk=opt("attn_k.bias"), bv=opt("attn_v.bias"),
                        q_norm=opt("attn_q_norm.weight"), k_norm=opt("attn_k_norm.weight"),
                        post_attn_norm=opt("post_attention_norm.weight"), post_ffn_norm=opt("post_ffw_norm.weight"),
                        window=c.layer_window(i), rope_table=c.layer_rope_table(i))
        t.prepare()
        # the repacked weights are the kernels' own copies now: the file's pages need not stay
        # resident as well (what is read in place, norms and embedding rows, faults back in)
        getattr(checkpoint, "release_pages", lambda: None)()
        self._t = t
        self._cache = self.new_kv_cache()
        self.timings = Timings()     # of the last generation
        self.n_past = 0              # positions filled in the cache
        self._cached: list[int] = []  # the tokens that filled them
        try:
            self.chat_format = check_format_name(chat_format)
        except ValueError as e:
            raise ArgumentError(f"chat_format: {e}") from None

    # --- tokens ---
    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            what = "a tokenizer.model, tokenizer.json or GGUF file"
            raise ArgumentError(f"{self.source}: this model has no tokenizer; pass tokenizer= {what}",
                                cli=f"{self.source}: this model has no tokenizer; give --tokenizer FILE ({what})")
        return self.tokenizer

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False, *, bos: bool | None = None,
                 add_bos: bool | None = None, special: bool | None = None) -> list[int]:
        """Token ids of ``text``, as llama.cpp's ``llama_tokenize``: ``add_special`` adds BOS (and
        EOS) where the vocabulary asks for them; ``parse_special`` turns control tokens written in
        the text (``<|im_start|>``) into their ids. ``bos`` and ``add_bos`` are other names of
        ``add_special``, ``special`` of ``parse_special`` (llama-cpp-python's ``Llama.tokenize``)."""
        for alias in (bos, add_bos):
            if alias is not None:
                add_special = bool(alias)
        if special is not None:
            parse_special = bool(special)
        text = check_text(text)  # a str, or UTF-8 bytes as llama-cpp-python takes them
        return self._tok().encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of ``ids``; control tokens show only with ``special=True``."""
        return self._tok().decode(ids, special=special)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """The tokens that end generation: the tokenizer's end-of-generation set, or the config's
        EOS when the model has no tokenizer."""
        if self.tokenizer is not None and self.tokenizer.eos_ids:
            return self.tokenizer.eos_ids
        return (self.config.eos_token_id,)

    # llama-cpp-python's Llama accessors, for code written against it
    def n_vocab(self) -> int:
        """The number of tokens in the vocabulary (``Llama.n_vocab()``)."""
        return self.tokenizer.vocab_size if self.tokenizer is not None else self.config.vocab_size

    def n_embd(self) -> int:
        """The embedding (hidden state) width (``Llama.n_embd()``)."""
        return self.config.dim

    def token_bos(self) -> int:
        """The vocabulary's BOS id, -1 when it has none (``Llama.token_bos()``)."""
        return self._tok().bos_id

    def token_eos(self) -> int:
        """The vocabulary's EOS id, -1 when it has none (``Llama.token_eos()``; ``eos_ids`` holds
        every token that ends generation)."""
        return self._tok().eos_id

    # --- forward ---

    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append ``tokens`` to the cached sequence (after ``n_past`` positions) and run them.

        Returns float32 logits: (vocab,) of the last token, or (len(tokens), vocab) of every token
        when ``all_logits``. Raises ValueError for an empty list, an id outside the vocabulary, or
        more tokens than the cache has room for (nothing is evaluated then).
        """
        arr = np.asarray(check_token_ids(tokens, self.config.vocab_size, "tokens"), dtype=np.int64)
        if arr.size == 0:
            raise ArgumentError("tokens: no tokens to evaluate")
        if self.n_past + arr.size > self.n_ctx:
            raise ArgumentError(f"context overflow: {self.n_past} cached + {arr.size} new tokens exceed n_ctx = "
                             f"{self.n_ctx} (load with a larger n_ctx, up to the model's {self.config.context_length})")
        arr = arr.astype(np.int32)
        idle_blas_threads()  # a spinning OpenBLAS worker would take a core from the kernels
        outs = []
        for start in range(0, arr.size, N_BATCH):
            chunk = arr[start:start + N_BATCH]
            last = start + N_BATCH >= arr.size
            n_out = chunk.size if all_logits else 1
            logits = self._t.forward(self._cache, chunk, self.n_past, n_out)
            self.n_past += chunk.size
            self._cached.extend(chunk.tolist())
            if all_logits or last:
                outs.append(logits)
        return np.concatenate(outs) if all_logits else outs[-1][0]

    def reset(self) -> None:
        """Forget the cached sequence."""
        self.n_past = 0
        self._cached = []

    def new_kv_cache(self):
        """An empty KV cache of this model's n_ctx and key/value types (one per sequence: the
        model's own, or a server's slot). Raises ArgumentError when it does not fit the memory
        available."""
        c = self.config
        _check_kv_memory(self.n_ctx, c, self.kv_cache_k, self.kv_cache_v)
        try:
            return _C.KVCache(c.n_layers, self.n_ctx, c.kv_dim, self.kv_cache_k, self.kv_cache_v,
                              n_kv_heads=c.n_kv_heads, attn_precision=self.attn_precision)
        except MemoryError:
            raise _kv_memory_error(self.n_ctx, c, self.kv_cache_k, self.kv_cache_v, None) from None

    @property
    def kv_cache_nbytes(self) -> int:
        """Bytes the KV cache holds: keys and values of every layer for n_ctx positions, in their types."""
        return int(self._cache.nbytes)

    def rewind(self, n_past: int) -> None:
        """Keep the first ``n_past`` cached positions and forget the rest (0 <= n_past <= n_past now)."""
        if isinstance(n_past, bool) or not isinstance(n_past, (int, np.integer)) or not 0 <= n_past <= self.n_past:
            raise ArgumentError(f"n_past must be an integer in 0..{self.n_past}, got {n_past!r}")
        self.n_past = int(n_past)
        self._cached = self._cached[:self.n_past]

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 (n_tokens, vocab) logits for a fresh sequence starting at position 0."""
        self.reset()
        return self.eval(token_ids, all_logits=True)

    def _prefill(self, ids: list[int]) -> np.ndarray:
        """Logits after ``ids``, reusing the cached prefix they share with the last sequence."""
        common = 0
        for a, b in zip(self._cached, ids[:-1]):
            if a != b:
                break
            common += 1
        self.n_past = common
        self._cached = self._cached[:common]
        self.timings.prompt_tokens = len(ids) - common
        return self.eval(ids[common:])

    # --- generation ---
    def _sampling_seed(self, seed: int | None) -> int | None:
        """A call's seed: its own, else the next one drawn from the model's ``seed``."""
        if seed is not None or self._seeds is None:
            return seed
        return int(self._seeds.integers(0, 2**63 - 1))

    @property
    def n_tokens(self) -> int:
        """Positions filled in the KV cache (llama-cpp-python's ``Llama.n_tokens``; :attr:`n_past`)."""
        return self.n_past

    def stream(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, seed: int | None = None,
               stop: str | Sequence[str] | None = None, *, presence_penalty: float = 0.0,
               frequency_penalty: float = 0.0, repeat_last_n: int = 64) -> Iterator[str]:
        """Yield the completion's text piece by piece as tokens are generated (see :meth:`generate`)."""
        sampler = Sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
                          seed=self._sampling_seed(seed), presence_penalty=presence_penalty,
                          frequency_penalty=frequency_penalty)
        for piece, _ in self._generate(prompt, max_tokens, sampler, stop):
            if piece:
                yield piece

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, seed: int | None = None,
                 stop: str | Sequence[str] | None = None, *, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, repeat_last_n: int = 64) -> str:
        """The completion of ``prompt`` (the prompt is not repeated).

        Stops after ``max_tokens`` tokens (``-1``: when the context is full), at any
        end-of-generation token (:attr:`eos_ids`: EOS, end of turn, ``<|im_end|>`` ...), or before
        the first occurrence of any ``stop`` string. ``temperature=0`` is greedy; ``seed`` makes
        sampling reproducible; ``repeat_penalty`` (llama.cpp's) and ``presence_penalty`` /
        ``frequency_penalty`` (OpenAI's) look at the last ``repeat_last_n`` tokens (llama.cpp's
        window: 64; 0 turns them off, -1 takes the whole context). A text prompt gets BOS only where the vocabulary asks for it
        (``add_bos_token``), and control tokens written in it (``<|im_start|>``) count as their ids,
        as llama-cli reads prompts; a prompt may also be a list of token ids, used as it is.
        """
        return "".join(self.stream(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, stop,
                                   presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                   repeat_last_n=repeat_last_n))

    def generate_tokens(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.8,
                        top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                        seed: int | None = None) -> list[int]:
        """The generated token ids (no stop strings; stops at an end-of-generation token or max_tokens)."""
        sampler = Sampler(temperature, top_k, top_p, min_p, repeat_penalty, seed=self._sampling_seed(seed))
        return [t for _, t in self._generate(prompt, max_tokens, sampler, None, decode=False)]

    def _generate(self, prompt, max_tokens: int, sampler: Sampler, stop, decode: bool = True):
        # a text prompt is read as llama-cli and llama-cpp-python read one: BOS where the vocabulary
        # asks for it, control tokens written in it (a chat template's <|im_start|>) as their ids
        if isinstance(prompt, (str, bytes, bytearray)):
            ids = self.tokenize(prompt, parse_special=True)
        else:
            ids = check_token_ids(prompt, self.config.vocab_size, "prompt")
        if not ids:
            raise ArgumentError("empty prompt: give at least one token (e.g. BOS)")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
            raise ArgumentError(f"max_tokens must be an integer, got {max_tokens!r}")
        if max_tokens < 0:  # llama.cpp's -n -1: until end-of-sequence or the context is full
            max_tokens = max(self.n_ctx - len(ids), 0)
        if len(ids) + max_tokens > self.n_ctx:
            raise ArgumentError(f"context overflow: the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) "
                             f"exceed n_ctx = {self.n_ctx}")
        if max_tokens == 0:
            return
        request = Request(ids, sampler=sampler, max_tokens=max_tokens, tokenizer=self._tok() if decode else None,
                          stop=stop, eos_ids=self.eos_ids)
        for step in self.run(request):
            if not step.eog:
                yield step.text, step.token
            elif step.text:
                yield step.text, -1

    def run(self, request: Request) -> Iterator[Step]:
        """Drive one :class:`Request` on this model's KV cache: evaluate its prompt (reusing the
        cached prefix it shares with the last sequence), then per step hand the logits to the
        request and evaluate the token it sampled, until it is done. Records :attr:`timings`.
        The cache then holds the prompt and every generated token but the last."""
        ids = request.prompt
        if not ids:
            raise ValueError("empty prompt: give at least one token (e.g. BOS)")
        if len(ids) >= self.n_ctx:
            raise ValueError(f"context overflow: the prompt ({len(ids)} tokens) leaves no room in n_ctx = {self.n_ctx}")
        self.timings = timings = Timings()
        t0 = time.perf_counter()
        logits = self._prefill(ids)
        timings.prompt_s = time.perf_counter() - t0
        while True:
            step = request.step(logits)
            if not request.done and self.n_past >= self.n_ctx:  # no room to evaluate the token
                step.text += request.stop("length")
                step.finish_reason = request.finish_reason
            yield step
            if request.done:
                return
            t0 = time.perf_counter()
            logits = self.eval([step.token])
            timings.eval_s += time.perf_counter() - t0
            timings.eval_tokens += 1

    def hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """float32 (n_tokens, dim): the final hidden states (after the output norm) of ``tokens``
        run as a fresh sequence from position 0, the rows embeddings are pooled from. The KV cache
        is used for the run and then emptied."""
        arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if arr.size == 0:
            raise ValueError("no tokens to embed")
        check_token_ids(arr, self.config.vocab_size, "tokens")
        if arr.size > self.n_ctx:
            raise ValueError(f"{arr.size} tokens exceed n_ctx = {self.n_ctx}")
        self.reset()
        arr = arr.astype(np.int32)
        try:
            out = [self._t.forward(self._cache, arr[s:s + N_BATCH], s, min(N_BATCH, arr.size - s), hidden=True)
                   for s in range(0, arr.size, N_BATCH)]
        finally:
            self.reset()
        return np.concatenate(out)

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({os.path.basename(self.source)!r}, dim={c.dim}, layers={c.n_layers}, heads={c.n_heads}/"
                f"{c.n_kv_heads}, vocab={c.vocab_size}, n_ctx={self.n_ctx})")

    @property
    def nbytes(self) -> int:
        """Bytes of weights (as stored)."""
        return sum(t.nbytes for t in self.tensors.values())


def load(path: str | os.PathLike | None = None, tokenizer: str | os.PathLike | Tokenizer | bool | None = None, qtype: str | None = None,
         n_threads: int | None = None, n_ctx: int | None = None, kv_cache: str = "f32", *,
         quant: str | None = None, threads: int | None = None, chat_format: str | None = None,
         kv_cache_k: str | None = None, kv_cache_v: str | None = None, attn_precision: str = "auto",
         seed: int | None = None, n_gpu_layers: int = 0, n_batch: int | None = None, logits_all: bool = False,
         verbose: bool = True, model_path: str | os.PathLike | None = None, lora: str | os.PathLike | None = None,
         lora_scale: float = 1.0) -> Model:
    """Load a model: a GGUF file (architecture ``llama``, ``qwen2``, ``qwen3``, ``gemma3`` or ``phi3``), a Hugging Face folder (config.json +
    safetensors) or a llama2.c ``.bin`` checkpoint (the loaders read it; see llamix.loaders).

    - ``tokenizer``: a Tokenizer or a tokenizer file (``tokenizer.model``, ``tokenizer.json``, a
      GGUF file, also vocabulary-only), to override or supply the model's own; it is read first,
      and the model's own vocabulary is then not read; ``False`` loads no tokenizer (prompts as
      token ids).
    - ``qtype``: ``"q4_0"``, ``"q8_0"`` or ``"f16"`` to convert float weights while loading
      (tensor by tensor from the mapping); ``None`` keeps the stored types. ``quant`` is an alias.
    - ``n_threads``: compute threads (default: physical cores; ``threads`` is an alias).
    - ``n_ctx``: KV cache length in tokens (default: the training context, at most 2048; 0: the
      training context, as llama.cpp and llama-cpp-python read 0).
    - ``kv_cache``: ``"f32"`` (default, exact), ``"f16"`` (half the memory, as llama.cpp keeps it),
      ``"q8_0"`` or ``"q4_0"``; ``kv_cache_k`` / ``kv_cache_v`` set keys and values apart
      (llama.cpp's ``-ctk`` / ``-ctv``).
    - ``attn_precision``: ``"auto"`` (default), ``"f32"`` or ``"bf16"``: the attention's arithmetic
      (see :class:`Model`; ``"auto"`` is ``"bf16"`` on CPUs with AMX tiles, else ``"f32"``).
    - ``chat_format``: a built-in chat format's name instead of the model's own template (see
      :mod:`llamix.chat_format`), as llama-cpp-python's ``Llama(chat_format=...)``.

    - ``seed``: the default sampling seed (see :class:`Model`), as ``Llama(seed=...)``.
    - ``n_gpu_layers``, ``n_batch``, ``logits_all``, ``verbose``: llama-cpp-python's, accepted so
      that its code runs unchanged, with no effect (CPU only; llamix sizes its own batches, keeps
      what logits a call asks for, and loads quietly); a nonzero ``n_gpu_layers`` warns.

    - ``lora``: a LoRA adapter, a GGUF adapter file (llama.cpp's convert_lora_to_gguf) or a PEFT
      folder (``adapter_config.json`` + ``adapter_model.safetensors``), folded into the weights as
      they load, ``W + lora_scale * alpha / r * (B @ A)``, each weight
      stored again in its own type (llama.cpp's ``--lora``, ``--lora-scaled``; see
      :mod:`llamix.loaders.lora`).

    ``model_path`` is another name of ``path`` (llama-cpp-python's).

    Raises FileNotFoundError for a missing path, ValueError naming the file and field otherwise.
    """
    if (path is None) == (model_path is None):
        raise ArgumentError("load: give the model's path once (path or model_path)")
    path = path if path is not None else model_path
    if n_gpu_layers:
        warnings.warn(f"n_gpu_layers={n_gpu_layers} has no effect: llamix runs on the CPU", stacklevel=_caller_level())
    del n_batch, logits_all, verbose   # accepted for llama-cpp-python's code, no effect here
    if lora is not None and not isinstance(lora, (str, os.PathLike)):   # before the model loads
        raise ArgumentError(f"lora must be the path of one adapter (a GGUF adapter file or a PEFT folder), got "
                            f"{type(lora).__name__}" + ("; several adapters at once are not supported yet"
                                                       if isinstance(lora, (list, tuple)) else ""))
    if lora == "":
        raise ArgumentError("lora='': no adapter path (pass None for no adapter)")
    n_threads = n_threads_arg(threads if n_threads is None else n_threads)   # before the model loads
    ck = load_checkpoint(path, tokenizer=tokenizer, qtype=qtype if quant is None else quant, lora=lora,
                         lora_scale=lora_scale)
    return Model(ck, n_ctx=n_ctx, n_threads=n_threads, kv_cache=kv_cache,
                 chat_format=chat_format, kv_cache_k=kv_cache_k, kv_cache_v=kv_cache_v, attn_precision=attn_precision,
                 seed=seed)


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside llamix, seen from the function calling this
    one: a warning points at the user's line (``Llama(...)`` calls :func:`load` from inside)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# llama-cpp-python's Llama() arguments for its GPU and memory layout, and their defaults: a
# different value has no effect here and says so in one warning (as -ngl does on the command line)
_LAYOUT_ARGS = {
    "split_mode": (1, "llamix runs on the CPU"), "main_gpu": (0, "llamix runs on the CPU"),
    "tensor_split": (None, "llamix runs on the CPU"), "offload_kqv": (True, "llamix runs on the CPU"),
    "op_offload": (None, "llamix runs on the CPU"), "numa": (False, "llamix places no memory by NUMA node"),
    "use_mlock": (False, "llamix does not lock the model in RAM"),
    "flash_attn": (False, "llamix's attention is always a tiled, flash-attention style one"),
    "swa_full": (None, "llamix keeps every position of the sliding-window layers"),
}
# llama-cpp-python's arguments accepted with no effect, silently: llamix does this anyway (maps the
# file, computes embeddings on request, sizes its batches, uses n_threads for prompts too)
_ACCEPTED_ARGS = ("use_mmap", "embedding", "n_ubatch", "n_threads_batch", "last_n_tokens_size", "no_perf")
# llama-cpp-python's arguments llamix cannot honour: anything but the default is an error naming it
_REFUSED_ARGS = {
    "vocab_only": (False, "llamix loads the weights (llamix.Tokenizer reads a vocabulary alone)"),
    "kv_overrides": (None, "llamix does not override a model's metadata"),
    "rope_scaling_type": ((None, -1), "llamix applies the model's own RoPE scaling"),
    "pooling_type": ((None, -1), "llamix pools embeddings as create_embedding / embed are asked to"),
    "attention_type": ((None, -1), "llamix's attention is causal"),
    "yarn_ext_factor": (-1.0, "llamix applies the model's own RoPE scaling"),
    "yarn_attn_factor": (1.0, "llamix applies the model's own RoPE scaling"),
    "yarn_beta_fast": (32.0, "llamix applies the model's own RoPE scaling"),
    "yarn_beta_slow": (1.0, "llamix applies the model's own RoPE scaling"),
    "yarn_orig_ctx": (0, "llamix applies the model's own RoPE scaling"),
    "lora_base": (None, "llamix folds the adapter (lora_path) into the loaded weights themselves"),
    "chat_handler": (None, "llamix renders the model's chat template or a built-in one: pass chat_format"),
    "draft_model": (None, "llamix has no speculative decoding"),
    "spm_infill": (False, "llamix has no infill mode"),
}


def _kv_type_of(name: str, t):
    """llama-cpp-python's ``type_k`` / ``type_v``: a ggml type id (GGML_TYPE_F16 = 1, ...), as
    llamix's KV cache type name; a name passes as it is."""
    if t is None or isinstance(t, str):
        return t
    ids = {info.gguf_id: n for n, info in ((n, qtype_info(n)) for n in KV_CACHE_TYPES)}
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or int(t) not in ids:
        known = BY_GGUF_ID.get(int(t)) if isinstance(t, (int, np.integer)) and not isinstance(t, bool) else None
        what = f" ({known.name})" if known is not None else ""
        raise ArgumentError(f"{name}={t!r}{what}: the KV cache types are "
                            + ", ".join(f"{n} ({i})" for i, n in sorted(ids.items())) + " (ggml type ids)")
    return ids[int(t)]


class Llama(Model):
    """llama-cpp-python's ``llama_cpp.Llama`` by name, so its code runs unchanged:
    ``Llama(model_path="m.gguf", n_ctx=2048, n_threads=4, seed=..., chat_format=..., ...)`` takes
    :func:`load`'s arguments and is the :class:`Model` it loads (``create_completion``,
    ``create_chat_completion``, ``tokenize``, ``embed``, ...).

    llama-cpp-python's other constructor arguments are accepted as it spells them: ``n_ctx=0`` is
    the model's training context; ``type_k`` / ``type_v`` (ggml type ids: f32 0, f16 1, q4_0 2,
    q8_0 8) set the KV cache types; ``lora_path`` / ``lora_scale`` are :func:`load`'s ``lora`` /
    ``lora_scale``; ``use_mmap``, ``embedding``, ``n_ubatch``, ``n_threads_batch``
    (llamix uses ``n_threads`` for prompts too), ``last_n_tokens_size``, ``no_perf`` have no effect;
    the GPU and memory layout ones (``main_gpu``, ``tensor_split``, ``flash_attn``, ``use_mlock``, ...)
    have none either and warn when given a value other than their default; and those llamix cannot
    honour (``lora_base``, ``chat_handler``, ``kv_overrides``, a ``rope_freq_base`` or
    ``rope_freq_scale`` other than the model's, ...) raise ArgumentError naming the argument. An
    unknown keyword is a TypeError."""

    def __init__(self, model_path: str | os.PathLike, *, rope_freq_base: float = 0.0, rope_freq_scale: float = 0.0,
                 type_k: int | str | None = None, type_v: int | str | None = None,
                 lora_path: str | os.PathLike | None = None, **kwargs):
        for name, (default, why) in _LAYOUT_ARGS.items():
            value = kwargs.pop(name, default)
            if value != default:
                warnings.warn(f"{name}={value!r} has no effect: {why}", stacklevel=_caller_level())
        for name in _ACCEPTED_ARGS:
            kwargs.pop(name, None)
        for name, (default, why) in _REFUSED_ARGS.items():
            value = kwargs.pop(name, None if isinstance(default, tuple) else default)
            if value not in (default if isinstance(default, tuple) else (default,)):
                raise ArgumentError(f"Llama({name}={value!r}): not supported: {why}")
        unknown = sorted(set(kwargs) - set(inspect.signature(load).parameters))
        if unknown:
            raise TypeError(f"Llama() got an unexpected keyword argument {unknown[0]!r}")
        if lora_path:   # llama-cpp-python's test: an empty lora_path is no adapter
            kwargs["lora"] = lora_path
        kwargs["kv_cache_k"] = _kv_type_of("type_k", type_k) or kwargs.get("kv_cache_k")
        kwargs["kv_cache_v"] = _kv_type_of("type_v", type_v) or kwargs.get("kv_cache_v")
        loaded = load(model_path, **kwargs)
        c = loaded.config
        if rope_freq_base and rope_freq_base != c.rope_theta:
            raise ArgumentError(f"Llama(rope_freq_base={rope_freq_base!r}): not supported: llamix uses the model's "
                                f"RoPE base ({c.rope_theta:g}); pass 0 (the model's)")
        if rope_freq_scale and (rope_freq_scale != 1.0 or c.rope_scaling):
            raise ArgumentError(f"Llama(rope_freq_scale={rope_freq_scale!r}): not supported: llamix applies the "
                                "model's own RoPE scaling; pass 0 (the model's)")
        self.__dict__.update(vars(loaded))   # a Model holds no finalizer: its state moves here whole

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, **kwargs) -> "Llama":
        """``Llama.from_pretrained(repo_id, filename, **load_args)``, as llama-cpp-python's: the one
        file of the Hugging Face repo matching ``filename`` (a name or a glob, e.g.
        ``"*q4_k_m.gguf"``), fetched through ``huggingface_hub`` (its cache first; HF_HUB_OFFLINE=1
        honoured; the ``hub`` extra). Raises ArgumentError when no file or several match (offline:
        none in the cache)."""
        try:
            import huggingface_hub
        except ImportError:
            raise ArgumentError("Llama.from_pretrained needs the huggingface_hub package (pip install "
                                "'llamix[hub]')") from None
        cache = cache_dir if cache_dir is not None else hub_cache_dir()

        def matching(local_only: bool) -> tuple[str, list[str]]:
            folder = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                                       allow_patterns=[filename], local_files_only=local_only)
            return folder, sorted(p for p in (os.path.relpath(os.path.join(d, f), folder)
                                              for d, _, fs in os.walk(folder) for f in fs)
                                  if fnmatch.fnmatch(p, filename))
        try:   # the cache first; then, unless HF_HUB_OFFLINE, the Hub
            folder, found = matching(local_only=True)
        except Exception:  # noqa: BLE001 - huggingface_hub raises several kinds for "not cached"
            folder, found = None, []
        if not found and not hub_offline():
            folder, found = matching(local_only=False)
        if not found and hub_offline():
            raise ArgumentError(f"{repo_id}: no file matching {filename!r} in the Hugging Face cache at {cache}, "
                                "and HF_HUB_OFFLINE is set, so nothing is downloaded")
        if len(found) != 1:
            raise ArgumentError(f"{repo_id}: {len(found)} files match {filename!r}"
                                + (f" ({', '.join(found[:8])}); name one" if found else ""))
        return cls(os.path.join(folder, found[0]), **kwargs)
