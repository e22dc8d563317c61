"""llama.cpp (llama-cpp-python) as a peer, always in a child process.

Every function here that touches llama.cpp is meant to run in a child (``child_process``): with
native CPU flags llama.cpp's repacked weight buffers (AMX on Xeon, extra buffer types elsewhere)
have crashed the whole test run with a segfault; in a child that is one failed test with a
message. Models are also opened with ``use_extra_bufts=False`` (no repacked weight buffers),
which avoids that crash. The parent process never imports llama_cpp: use ``require()`` to skip
(or fail under CI) when it is missing, and the ``*_in_child`` wrappers to call it (one worker
process for the session, replaced after a crash: see ``child()``).

Only numpy and llama_cpp are imported in the child (never llamix).
"""
from __future__ import annotations

import atexit
import ctypes
import functools

import numpy as np

from child_process import Child
from helpers import skip_or_fail

# One thread: the test models are tiny, llama.cpp's results do not depend on its thread count
# (each output element is one thread's dot product), and its spinning thread barrier makes two
# threads several times slower whenever another process wants a core (measured on 2 cores:
# the llama.cpp tests took 31-34 s with 2 threads, 17-18 s with 1, under a load of 3.5).
DEFAULT_THREADS = 1


# --- runs in the child ------------------------------------------------------------------------------
def _llama_cpp():
    import llama_cpp

    return llama_cpp


def _no_extra_bufts(lib) -> None:
    """Make every llama_model_params that llama-cpp-python creates say use_extra_bufts=False
    (Llama() has no argument for it: it fills llama_model_default_params() and swallows unknown
    keyword arguments)."""
    if getattr(lib, "_llamix_no_extra_bufts", False):
        return
    if "use_extra_bufts" not in dict(lib.llama_model_params._fields_):
        raise RuntimeError(f"llama-cpp-python {getattr(_llama_cpp(), '__version__', '?')} has no "
                           "llama_model_params.use_extra_bufts; the tests need a version that has it (0.3.36)")
    default = lib.llama_model_default_params

    @functools.wraps(default)
    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    lib._llamix_no_extra_bufts = True


def open_model(path, n_ctx: int = 128, n_threads: int = DEFAULT_THREADS, **kw):
    """llama_cpp.Llama on ``path`` without extra (repacked) weight buffers; quiet by default."""
    llama_cpp = _llama_cpp()
    _no_extra_bufts(llama_cpp.llama_cpp)
    kw.setdefault("verbose", False)
    kw.setdefault("n_threads_batch", n_threads)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, **kw)
    if llm.model_params.use_extra_bufts:
        raise RuntimeError("use_extra_bufts=False did not reach llama.cpp's model params")
    return llm


def scores(llm, ids) -> np.ndarray:
    """(len(ids), vocab) logits of ``ids`` evaluated from an empty cache (needs logits_all)."""
    llm.reset()
    llm.eval([int(i) for i in ids])
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def last_logits(llm) -> np.ndarray:
    """The logits of the last evaluated token (works without logits_all)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def greedy(llm, prompt, n: int, stop_at_eos: bool = True) -> list[int]:
    """Up to ``n`` greedy tokens after ``prompt`` (llama.cpp's sampler at temperature 0, top-k 1)."""
    out = []
    llm.reset()
    for t in llm.generate([int(i) for i in prompt], temp=0.0, top_k=1, reset=True):
        if stop_at_eos and t == llm.token_eos():
            break
        out.append(int(t))
        if len(out) == n:
            break
    return out


def run_model(path, *, n_ctx: int = 128, n_threads: int = DEFAULT_THREADS, tokenize=(), logits=(), greedy_runs=(),
              **params) -> dict:
    """One model load, several questions. tokenize: [(text, add_bos)]; logits: [ids] (each from an
    empty cache); greedy_runs: [(prompt, n, stop_at_eos)]. Answers under the same keys, in order."""
    llm = open_model(path, n_ctx=n_ctx, n_threads=n_threads, logits_all=True, **params)
    return {"tokenize": [llm.tokenize(text.encode() if isinstance(text, str) else text, add_bos=bos)
                         for text, bos in tokenize],
            "logits": [scores(llm, ids) for ids in logits],
            "greedy": [greedy(llm, prompt, n, stop) for prompt, n, stop in greedy_runs]}


def run_prompt(path, ids=None, text: str | None = None, n_greedy: int = 0, all_logits: bool = False,
               n_ctx: int = 256, n_threads: int = DEFAULT_THREADS, f32_kv: bool = True, detokenize=None) -> dict:
    """``ids`` (the prompt; llama.cpp's own tokenization of ``text`` with BOS when given),
    ``greedy`` (``n_greedy`` argmax tokens after the prompt, no end-of-sequence stop), ``text``
    (llama.cpp's detokenization of ``detokenize`` ids, when given) and ``logits`` (float32
    (n, vocab): every prompt position when ``all_logits``, else (1, vocab) of the last).
    ``f32_kv``: keep llama.cpp's KV cache in float32 (its default is fp16)."""
    kw = {"type_k": 0, "type_v": 0} if f32_kv else {}  # GGML_TYPE_F32
    llm = open_model(path, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=all_logits,
                     seed=0, **kw)
    if ids is None:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    ids = [int(i) for i in ids]
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids)], dtype=np.float32) if all_logits else last_logits(llm)[None]
    out = []
    for _ in range(n_greedy):  # the last row (with logits_all, get_logits() is the first)
        out.append(int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)))))
        llm.eval([out[-1]])
    res = {"ids": ids, "greedy": out, "logits": logits}
    if detokenize is not None:
        res["text"] = llm.detokenize([int(i) for i in detokenize]).decode("utf-8", errors="replace")
    return res


def quantize(src, dst, ftype: str, pure: bool = False, nthread: int = DEFAULT_THREADS) -> int:
    """llama_model_quantize(src -> dst) to LLAMA_FTYPE_MOSTLY_<ftype>; llama.cpp's return code."""
    llama_cpp = _llama_cpp()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.pure = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}"), nthread, pure
    return int(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)))


def probe() -> dict:
    """Whether llama_cpp imports here, and its version."""
    llama_cpp = _llama_cpp()
    return {"version": getattr(llama_cpp, "__version__", "?"),
            "use_extra_bufts": "use_extra_bufts" in dict(llama_cpp.llama_cpp.llama_model_params._fields_)}


# --- called in the parent -----------------------------------------------------------------------------
_child = None


def child() -> Child:
    """The worker process that runs llama.cpp for this session's tests. One process serves every
    call (llama_cpp is imported once); after a crash, which fails only the test that made the
    call, the next call starts a fresh one. Closed at exit."""
    global _child
    if _child is None:
        _child = Child()
        atexit.register(_child.close)
    return _child


@functools.lru_cache(maxsize=None)
def _probe():
    try:
        return child().call(probe, timeout=300), None
    except Exception as e:  # noqa: BLE001 - any failure means the peer is unusable
        return None, f"{type(e).__name__}: {e}"


def available() -> tuple[bool, str]:
    """(usable, reason) for llama-cpp-python, asked of the child process once per session."""
    info, err = _probe()
    if info is None:
        return False, f"peer 'llama_cpp' is not importable ({err.splitlines()[0]}); install llamix[peers] (see README)"
    if not info["use_extra_bufts"]:
        return False, (f"llama-cpp-python {info['version']} has no use_extra_bufts model parameter; "
                       "install llamix[peers] (llama-cpp-python==0.3.36)")
    return True, f"llama-cpp-python {info['version']}"


def require() -> None:
    """Skip the calling test when llama.cpp is not usable; fail instead under CI."""
    ok, reason = available()
    if not ok:
        skip_or_fail(reason)


def run_model_in_child(path, **kw) -> dict:
    """run_model in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(run_model, path, **kw)


def quantize_in_child(src, dst, ftype: str, pure: bool = False) -> int:
    """quantize in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(quantize, src, dst, ftype, pure)


def run_prompt_in_child(path, **kw) -> dict:
    """run_prompt in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(run_prompt, path, **kw)


def api_results(path, prompt: str, messages: list, n_ctx: int = 256) -> dict:
    """llama-cpp-python's own API results on ``path`` (completion, streamed chunks, logprobs,
    chat completion and chunks, embeddings), to compare their shapes with llamix's."""
    llm = open_model(path, n_ctx=n_ctx, logits_all=True, seed=1)
    out = {
        "completion": llm.create_completion(prompt, max_tokens=4, seed=1),
        "completion_logprobs": llm.create_completion(prompt, max_tokens=3, logprobs=2, seed=1),
        "completion_echo": llm(prompt, max_tokens=2, echo=True, seed=1),
        "completion_stream": list(llm.create_completion(prompt, max_tokens=4, stream=True, seed=1)),
        "chat": llm.create_chat_completion(messages, max_tokens=4, seed=1),
        "chat_logprobs": llm.create_chat_completion(messages, max_tokens=3, logprobs=True, top_logprobs=2, seed=1),
        "chat_stream": list(llm.create_chat_completion(messages, max_tokens=4, stream=True, seed=1)),
    }
    del llm
    emb = open_model(path, n_ctx=n_ctx, embedding=True, pooling_type=1)  # LLAMA_POOLING_TYPE_MEAN
    out["embedding"] = emb.create_embedding(["hello world", "a b"])
    return out


def api_results_in_child(path, prompt: str, messages: list) -> dict:
    """api_results in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(api_results, path, prompt, messages)


def completion_texts(path, prompt: str, runs: list[dict], n_ctx: int = 256) -> list[str]:
    """The text of llama-cpp-python's ``Llama.create_completion(prompt, **kw)`` for each kw in runs."""
    llm = open_model(path, n_ctx=n_ctx, seed=1)
    return [llm.create_completion(prompt, **kw)["choices"][0]["text"] for kw in runs]


def completion_texts_in_child(path, prompt: str, runs: list[dict]) -> list[str]:
    """completion_texts in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(completion_texts, path, prompt, runs)


def accessors(path) -> dict:
    """Llama's vocabulary and size accessors on ``path``: n_vocab, n_embd, token_bos, token_eos."""
    llm = open_model(path)
    return {"n_vocab": llm.n_vocab(), "n_embd": llm.n_embd(), "token_bos": llm.token_bos(),
            "token_eos": llm.token_eos()}


def accessors_in_child(path) -> dict:
    """accessors in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(accessors, path)


def ggml_quantize(w: np.ndarray, type_name: str, imatrix=None) -> np.ndarray:
    """ggml's own quantizer (ggml_quantize_chunk in llama-cpp-python's libggml-base: the code
    llama-quantize runs per tensor) on a float32 (rows, k) matrix, with optional per-column
    importance; uint8 (rows, row_bytes)."""
    import os

    llama_cpp = _llama_cpp()
    from gguf import GGMLQuantizationType

    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    tid = int(GGMLQuantizationType[type_name.upper()])
    lib.ggml_quantize_init(tid)
    w = np.ascontiguousarray(w, dtype=np.float32)
    row = int(lib.ggml_row_size(tid, w.shape[1]))
    out = np.zeros((w.shape[0], row), np.uint8)
    imp = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    lib.ggml_quantize_chunk(tid, w.ctypes.data, out.ctypes.data, 0, w.shape[0], w.shape[1],
                            None if imp is None else imp.ctypes.data)
    return out


def ggml_quantize_in_child(w, type_name: str, imatrix=None) -> np.ndarray:
    """ggml_quantize in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(ggml_quantize, w, type_name, imatrix)


def quantize_ex(src, dst, ftype: str, *, pure: bool = False, output_tensor_type: str | None = None,
                token_embedding_type: str | None = None, leave_output_tensor: bool = False, tensor_types=(),
                imatrix: dict | None = None, nthread: int = DEFAULT_THREADS) -> int:
    """llama_model_quantize with llama-quantize's per-tensor flags: type names as GGUF spells them
    (``"q8_0"``), ``tensor_types`` ((pattern, type), ...) as --tensor-type, ``imatrix`` a dict of
    tensor name -> float32 per-column importance (what llama-quantize passes from --imatrix)."""
    llama_cpp = _llama_cpp()
    from gguf import GGMLQuantizationType

    gtype = lambda name: int(GGMLQuantizationType[name.upper()])  # noqa: E731
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.pure = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}"), nthread, pure
    if output_tensor_type:
        p.output_tensor_type = gtype(output_tensor_type)
    if token_embedding_type:
        p.token_embedding_type = gtype(token_embedding_type)
    p.quantize_output_tensor = not leave_output_tensor
    keep = []
    if tensor_types:
        tt = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (pattern, typ) in enumerate(tensor_types):
            tt[i].pattern, tt[i].type = pattern.encode(), gtype(typ)
        tt[len(tensor_types)].pattern = None
        p.tt_overrides = tt
        keep.append(tt)
    if imatrix:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, v) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            arr[i].name = name.encode()
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        p.imatrix = arr
        keep.append(arr)
    return int(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)))


def quantize_ex_in_child(src, dst, ftype: str, **kw) -> int:
    """quantize_ex in the child process (see child())."""
    __tracebackhide__ = True
    return child().call(quantize_ex, src, dst, ftype, **kw)
