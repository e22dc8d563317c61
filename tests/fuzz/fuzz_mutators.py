"""Structure-aware mutators: one hypothesis strategy per fuzz target, each drawing a few mutations of a
well-formed input at the level of its structure (a GGUF metadata value of another type, a
safetensors header field, a config.json value, a llama2.c header int, a merge config parameter,
the text given to the tokenizer) and sometimes at the byte level (truncation, flipped bytes).

A case is a dict: ``files`` ({name: bytes}: the folder the target reads), ``args`` (JSON values
the target takes), ``note`` (the mutations, for people reading a saved case).
"""
from __future__ import annotations

import base64
import json
import math

import yaml
from hypothesis import strategies as st

import fuzz_formats as ff

# integers that break size arithmetic: zero, signs, powers of two at type edges, huge counts
EDGE_INTS = [0, 1, 2, 3, -1, -2, 7, 16, 31, 32, 33, 255, 256, 1000, 65535, 65536, 10**7, 2**31 - 1, 2**31, 2**32 - 1,
             2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -2**31, -2**63]
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, 1e308, math.inf, -math.inf, math.nan]

edge_int = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-2**64, 2**64))
edge_float = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
short_text = st.one_of(st.sampled_from(["", "llama", "linear", "llama3", "gpt2", "none", "default", "silu", "F32",
                                        "BF16", "float32", "../x", "/etc/passwd"]),
                       st.text(max_size=12))

json_scalar = st.one_of(st.none(), st.booleans(), edge_int, edge_float, short_text)
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                           st.dictionaries(short_text, c, max_size=3)),
                          max_leaves=6)
DEEP = st.sampled_from([50, 500, 1000, 2000, 5000, 100000])


def _case(files: dict, args: dict | None = None, notes: list | None = None) -> dict:
    return {"files": files, "args": args or {}, "note": "; ".join(notes or [])}


@st.composite
def byte_noise(draw, raw: bytes, notes: list) -> bytes:
    """Sometimes truncate the bytes or flip a few of them."""
    op = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if op == "truncate" and raw:
        n = draw(st.integers(0, len(raw) - 1))
        notes.append(f"truncated to {n} bytes")
        return raw[:n]
    if op == "flip" and raw:
        b = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
            notes.append(f"byte {i} = {b[i]}")
        return bytes(b)
    return raw


# --- GGUF -------------------------------------------------------------------------------------------
GGUF_KEYS = [k for k, _, _ in ff.base_gguf_kv()] + [
    "general.alignment", "llama.vocab_size", "llama.attention.key_length", "llama.attention.value_length",
    "llama.rope.scaling.type", "llama.rope.scaling.factor", "llama.attention.sliding_window",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.merges",
    "tokenizer.ggml.pre", "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.add_eos_token"]


@st.composite
def gguf_value(draw, depth: int = 0):
    """(value type, value) of any GGUF type, with edge values."""
    vtype = draw(st.sampled_from([ff.U8, ff.I8, ff.U16, ff.I16, ff.U32, ff.I32, ff.F32, ff.BOOL, ff.STR, ff.ARR,
                                  ff.U64, ff.I64, ff.F64, 13, 0xFFFFFFFF]))
    if vtype in (ff.F32, ff.F64):
        return vtype, draw(edge_float)
    if vtype in ff.SCALAR_FMT:
        return vtype, draw(edge_int)
    if vtype == ff.STR:
        return vtype, draw(st.one_of(short_text, st.binary(max_size=8)))
    if vtype == ff.ARR:
        kind = draw(st.sampled_from(["items", "items", "deep", "claims"]))
        if kind == "deep" and depth == 0:
            return vtype, ff.Deep(draw(DEEP))
        etype = draw(st.sampled_from([ff.U8, ff.I32, ff.U32, ff.U64, ff.I64, ff.F32, ff.F64, ff.STR, ff.BOOL, ff.ARR,
                                      99]))
        n = draw(st.integers(0, 5))
        items = []
        for _ in range(n):
            if etype == ff.ARR:
                items.append(draw(st.sampled_from([(ff.U8, [1, 2]), (ff.STR, ["a"]), (ff.ARR, [])])))
            elif etype in (ff.F32, ff.F64):
                items.append(draw(edge_float))
            elif etype == ff.STR:
                items.append(draw(short_text))
            elif etype in ff.SCALAR_FMT:
                items.append(draw(edge_int))
        if kind == "claims":
            return vtype, (etype, items, draw(st.sampled_from([2**31, 2**40, 2**63, 2**64 - 1])))
        return vtype, (etype, items)
    return vtype, 0  # unknown type id: no payload


@st.composite
def gguf_case(draw):
    kv = [list(x) for x in ff.base_gguf_kv()]
    tensors, data = ff.base_gguf_tensors()
    tensors = [list(t) for t in tensors]
    header: dict = {}
    notes: list = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "set", "set", "del", "dim", "dim", "ttype", "offset", "tname",
                                   "tdel", "tdup", "header", "tokens"]))
        if op == "set":
            key = draw(st.sampled_from(GGUF_KEYS))
            vtype, value = draw(gguf_value())
            kv = [e for e in kv if e[0] != key] + [[key, vtype, value]]
            notes.append(f"{key} = type {vtype} {value!r:.60}")
        elif op == "del":
            i = draw(st.integers(0, len(kv) - 1))
            notes.append(f"deleted {kv[i][0]}")
            del kv[i]
        elif op == "tokens":  # the vocabulary in some odd shape
            vtype, value = draw(st.sampled_from([
                (ff.STR, "abc"), (ff.U32, 5), (ff.ARR, (ff.U32, [1, 2, 3])), (ff.ARR, (ff.STR, [])),
                (ff.ARR, (ff.STR, ff.SPM_TOKENS[:4])), (ff.ARR, (ff.STR, ff.SPM_TOKENS + ["extra"] * 3)),
                (ff.ARR, (ff.STR, ff.SPM_TOKENS[:-1] + [b"\xff\xfe"]))]))
            kv = [e for e in kv if e[0] != "tokenizer.ggml.tokens"] + [["tokenizer.ggml.tokens", vtype, value]]
            notes.append(f"tokenizer.ggml.tokens = {value!r:.60}")
        elif tensors and op in ("dim", "ttype", "offset", "tname", "tdel", "tdup"):
            i = draw(st.integers(0, len(tensors) - 1))
            t = tensors[i]
            if op == "dim":
                ne = list(t[1])
                if draw(st.booleans()) or not ne:
                    ne = [draw(edge_int) for _ in range(draw(st.integers(0, 9)))]
                else:
                    ne[draw(st.integers(0, len(ne) - 1))] = draw(edge_int)
                t[1] = ne
                notes.append(f"{t[0]} ne = {ne}")
            elif op == "ttype":
                t[2] = draw(st.one_of(st.integers(0, 45), st.sampled_from([2**31, 2**32 - 1])))
                notes.append(f"{t[0]} type = {t[2]}")
            elif op == "offset":
                t[3] = draw(st.one_of(edge_int, st.integers(0, len(data) + 64)))
                notes.append(f"{t[0]} offset = {t[3]}")
            elif op == "tname":
                t[0] = draw(st.one_of(st.sampled_from(["blk.99.attn_q.weight", "rope_freqs.weight", "output.weight",
                                                       "", "blk.0.attn_qkv.weight", "rope_factors_long.weight"]),
                                      st.binary(max_size=6)))
                notes.append(f"tensor {i} renamed {t[0]!r}")
            elif op == "tdel":
                notes.append(f"dropped tensor {t[0]}")
                del tensors[i]
            else:
                tensors.append(list(t))
                notes.append(f"duplicated tensor {t[0]}")
        elif op == "header":
            field = draw(st.sampled_from(["version", "n_tensors", "n_kv", "magic"]))
            if field == "magic":
                header["magic"] = draw(st.sampled_from([b"GGUf", b"\0\0\0\0", b"FUGG"]))
            else:
                header[field] = draw(edge_int)
            notes.append(f"header {field} = {header[field]!r}")
    raw = ff.gguf_bytes([tuple(e) for e in kv], [tuple(t) for t in tensors], data, **header)
    raw = draw(byte_noise(raw, notes))
    return _case({"model.gguf": raw}, notes=notes)


# --- safetensors headers (and shard indexes) ---------------------------------------------------------
@st.composite
def safetensors_case(draw):
    header, data = ff.st_header_and_data(ff.hf_tensors(0))
    notes: list = []
    files = {"config.json": json.dumps(ff.base_hf_config()).encode()}
    names = list(header)
    raw_header = None
    length = None
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["field", "field", "field", "delfield", "negshape", "rename", "drop", "meta",
                                   "top", "deep", "length", "nonutf8", "index"]))
        name = draw(st.sampled_from(names))
        if op == "field" and isinstance(header, dict) and isinstance(header.get(name), dict):
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            value = draw(st.one_of(json_value, st.lists(edge_int, max_size=3),
                                   st.lists(edge_float, min_size=2, max_size=2)))
            header[name][field] = value
            notes.append(f"{name}.{field} = {value!r:.60}")
        elif op == "delfield" and isinstance(header, dict) and isinstance(header.get(name), dict):
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            header[name].pop(field, None)
            notes.append(f"{name}.{field} deleted")
        elif op == "negshape" and isinstance(header, dict) and isinstance(header.get(name), dict):
            shape = header[name].get("shape")
            if isinstance(shape, list) and len(shape) == 2 and all(type(v) is int for v in shape):
                header[name]["shape"] = [-shape[0], -shape[1]]
                notes.append(f"{name}.shape negated")
        elif op == "rename" and isinstance(header, dict) and name in header:
            new = draw(short_text)
            header[new] = header.pop(name)
            notes.append(f"{name} renamed {new!r}")
        elif op == "drop" and isinstance(header, dict) and name in header:
            header.pop(name)
            notes.append(f"{name} dropped")
        elif op == "meta" and isinstance(header, dict):
            header["__metadata__"] = draw(json_value)
            notes.append(f"__metadata__ = {header['__metadata__']!r:.60}")
        elif op == "top":
            header = draw(st.one_of(json_scalar, st.lists(json_scalar, max_size=2)))
            notes.append(f"header = {header!r:.60}")
        elif op == "deep":
            d = draw(DEEP)
            raw_header = (b'{"a":' + b"[" * d + b"]" * d + b"}")
            notes.append(f"header nested {d} deep")
        elif op == "length":
            length = draw(edge_int)
            notes.append(f"header length = {length}")
        elif op == "nonutf8":
            raw_header = json.dumps(header).encode()[:-1] + b', "\xff\xfe": 1}'
            notes.append("non-UTF-8 header")
        elif op == "index":
            files.update(draw(index_files(header, data, notes)))
    if "model.safetensors.index.json" not in files:
        raw = ff.st_bytes(header, data, raw_header=raw_header, length=length)
        files["model.safetensors"] = draw(byte_noise(raw, notes))
    return _case(files, notes=notes)


@st.composite
def index_files(draw, header, data, notes):
    """Two shards and an index whose weight_map the mutation spoils."""
    if not isinstance(header, dict):
        return {}
    names = [n for n in header if n != "__metadata__" and isinstance(header[n], dict)]
    half = len(names) // 2
    files = {}
    weight_map: object = {}
    for shard, part in (("model-00001-of-00002.safetensors", names[:half]),
                        ("model-00002-of-00002.safetensors", names[half:])):
        h, d = {}, bytearray()
        for n in part:
            e = dict(header[n])
            try:
                b, end = (int(x) for x in e["data_offsets"])
                chunk = data[b:end]
            except (TypeError, ValueError, KeyError, OverflowError):
                chunk = b""
            e["data_offsets"] = [len(d), len(d) + len(chunk)]
            d += chunk
            h[n] = e
            weight_map[n] = shard
        files[shard] = ff.st_bytes(h, bytes(d))
    op = draw(st.sampled_from(["none", "null", "list", "abs", "dotdot", "missing", "notstored", "value", "nomap"]))
    name = names[0] if names else "x"
    if op == "null":
        weight_map = None
    elif op == "list":
        weight_map = list(weight_map)
    elif op == "abs":
        weight_map[name] = "/etc/hostname"
    elif op == "dotdot":
        weight_map[name] = "../outside.safetensors"
    elif op == "missing":
        weight_map[name] = "model-00003-of-00002.safetensors"
    elif op == "notstored":
        weight_map["model.layers.99.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    elif op == "value":
        weight_map[name] = draw(json_value)
    index = {"metadata": {"total_size": len(data)}, "weight_map": weight_map}
    if op == "nomap":
        index = draw(json_value)
    notes.append(f"sharded, index {op}")
    files["model.safetensors.index.json"] = json.dumps(index, allow_nan=True).encode()
    return files


# --- config.json ----------------------------------------------------------------------------------------
HF_KEYS = list(ff.base_hf_config()) + ["head_dim", "rope_scaling", "rope_parameters", "sliding_window", "hidden_act",
                                       "attention_bias", "mlp_bias", "dtype"]
ROPE_SCALINGS = [None, {"rope_type": "linear", "factor": None}, {"rope_type": "linear", "factor": "2"},
                 {"rope_type": "linear", "factor": math.inf}, {"rope_type": "linear"}, {"type": "linear", "factor": 2.0},
                 {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192}, {"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": "x"},
                 {"rope_type": "yarn", "factor": 2.0}, [1, 2], "linear", {"rope_type": None, "factor": 2}]


@st.composite
def hf_config_case(draw):
    cfg = ff.base_hf_config()
    notes: list = []
    raw = None
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "int", "int", "scaling", "del", "nonutf8", "top", "deep"]))
        key = draw(st.sampled_from(HF_KEYS))
        if op == "set":
            cfg[key] = draw(json_value)
            notes.append(f"{key} = {cfg[key]!r:.60}")
        elif op == "int":
            cfg[key] = draw(edge_int)
            notes.append(f"{key} = {cfg[key]}")
        elif op == "scaling":
            cfg["rope_scaling"] = draw(st.sampled_from(ROPE_SCALINGS))
            notes.append(f"rope_scaling = {cfg['rope_scaling']!r}")
        elif op == "del":
            cfg.pop(key, None)
            notes.append(f"{key} deleted")
        elif op == "nonutf8":
            raw = json.dumps(cfg).encode()[:-1] + b', "name": "\xff\xfe"}'
            notes.append("non-UTF-8 config.json")
        elif op == "top":
            raw = json.dumps(draw(st.one_of(json_scalar, st.lists(json_scalar, max_size=2)))).encode()
            notes.append(f"config.json = {raw[:40]!r}")
        elif op == "deep":
            d = draw(DEEP)
            raw = b'{"model_type": "llama", "x": ' + b"[" * d + b"]" * d + b"}"
            notes.append(f"config.json nested {d} deep")
    if raw is None:
        raw = json.dumps(cfg, allow_nan=True).encode()
    raw = draw(byte_noise(raw, notes))
    files = dict(ff.hf_folder_files(0))
    files["config.json"] = raw
    return _case(files, notes=notes)


# --- llama2.c -----------------------------------------------------------------------------------------
@st.composite
def llama2c_case(draw):
    version = draw(st.sampled_from([0, 1]))
    h = dict(ff.L2C_BASE)
    if version == 0:
        h["vocab_size"] = -h["vocab_size"] if draw(st.booleans()) else h["vocab_size"]
    notes = [f"version {version}"]
    for _ in range(draw(st.integers(0, 3))):
        f = draw(st.sampled_from(ff.L2C_FIELDS + (("version", "shared") if version == 1 else ())))
        h[f] = draw(st.one_of(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 1024, 2**16, 2**16 + 1, -1, -16,
                                               2**31 - 1, -2**31]), st.integers(-2**31, 2**31 - 1)))
        notes.append(f"{f} = {h[f]}")
    body = ff.l2c_floats(h, version)
    size_op = draw(st.sampled_from(["exact", "exact", "exact", "base", "short", "long", "cut"]))
    if size_op == "base" or body is None:
        body = ff.l2c_floats(ff.L2C_BASE, version) if size_op == "base" or body is None else body
    raw = ff.l2c_bytes(h, version, body)
    if size_op == "short" and len(raw) > 1:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif size_op == "long":
        raw += b"\0" * draw(st.integers(1, 64))
    elif size_op == "cut":
        raw = raw[:draw(st.integers(0, 40))]
    notes.append(f"{size_op}: {len(raw)} bytes")
    files = {"model.bin": raw}
    tok = draw(st.sampled_from([None, 8, 16, 32, 300]))
    if tok:
        files["tokenizer.model"] = ff.spm_model_bytes(tok, with_bytes=tok >= 259)
        notes.append(f"tokenizer.model of {tok}")
    return _case(files, notes=notes)


# --- merge configs ---------------------------------------------------------------------------------------
METHODS = ["linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
           "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough", "nonsense"]
PARAMS = ["weight", "density", "gamma", "epsilon", "lambda", "t", "normalize", "rescale", "int8_mask", "filter_wise"]
MODEL_REFS = ["a", "b", "c", "d", "g.gguf", "s.bin", "text.gguf", "missing", "/abs/nowhere", "../outside", ""]
param_value = st.one_of(st.sampled_from([0.5, 1.0, 0.0, -1.0, math.nan, math.inf, -math.inf, -2**63, 2**63, 1e308,
                                         "0.5", ".nan", "x", True, None, [], [0.1, 0.9], [math.nan, 1.0]]),
                        json_value)


TASK_FAMILY = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della",
               "della_linear"]


def merge_template(method: str) -> dict:
    """A valid config of ``method`` over the fixture folders a, b, d (2 layers each; c has 3)."""
    if method == "linear":
        return {"merge_method": method, "models": [{"model": "a", "parameters": {"weight": 1.0}},
                                                   {"model": "b", "parameters": {"weight": 0.5}}]}
    if method == "slerp":
        return {"merge_method": method, "base_model": "a", "models": [{"model": "a"}, {"model": "b"}],
                "parameters": {"t": 0.5}}
    if method == "nuslerp":
        return {"merge_method": method, "models": [{"model": "a", "parameters": {"weight": 0.5}},
                                                   {"model": "b", "parameters": {"weight": 0.5}}]}
    if method == "model_stock":
        return {"merge_method": method, "base_model": "a", "models": [{"model": "b"}, {"model": "d"}]}
    if method == "passthrough":
        return {"merge_method": method, "slices": [{"sources": [{"model": "a", "layer_range": [0, 2]}]}]}
    params = {"weight": 1.0, "density": 0.5}
    if method.startswith("della"):
        params["epsilon"] = 0.1
    return {"merge_method": method, "base_model": "a", "models": [{"model": "b", "parameters": params},
                                                                  {"model": "d", "parameters": dict(params)}]}


@st.composite
def merge_case(draw):
    method = draw(st.sampled_from(METHODS[:-1]))
    cfg = merge_template(method)
    cfg["dtype"] = "float32"
    notes = [method]
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["param", "param", "param", "gparam", "only_base", "model", "key", "drop_models",
                                   "layer_range", "method"]))
        models = [m for m in cfg.get("models") or [] if isinstance(m, dict)] if isinstance(cfg.get("models"), list) \
            else []
        if op == "param" and models:
            m = draw(st.sampled_from(models))
            name = draw(st.sampled_from(PARAMS))
            if not isinstance(m.get("parameters"), dict):
                m["parameters"] = {}
            m["parameters"][name] = draw(param_value)
            notes.append(f"{m['model']}.{name} = {m['parameters'][name]!r:.40}")
        elif op == "gparam":
            name = draw(st.sampled_from(PARAMS))
            if not isinstance(cfg.get("parameters"), dict):
                cfg["parameters"] = {}
            cfg["parameters"][name] = draw(param_value)
            notes.append(f"parameters.{name} = {cfg['parameters'][name]!r:.40}")
        elif op == "only_base" and models and cfg.get("base_model"):
            cfg["models"] = [{"model": cfg["base_model"]}]
            notes.append("only the base model")
        elif op == "model" and models:
            m = draw(st.sampled_from(models))
            m["model"] = draw(st.sampled_from(MODEL_REFS))
            notes.append(f"model {m['model']!r}")
        elif op == "key":
            key = draw(st.sampled_from(["dtype", "out_dtype", "tokenizer_source", "base_model", "merge_method",
                                        "bogus", "parameters"]))
            cfg[key] = draw(st.one_of(st.sampled_from(MODEL_REFS + ["base", "union", "bfloat16", "float16"]),
                                      json_value))
            notes.append(f"{key} = {cfg[key]!r:.40}")
        elif op == "drop_models":
            cfg.pop("models", None)
            notes.append("no models")
        elif op == "layer_range" and cfg.get("slices"):
            cfg["slices"][0]["sources"][0]["layer_range"] = draw(st.sampled_from(
                [[0, 1], [1, 2], [0, 99], [2, 1], [-1, 1], [0.5, 1], "x", [0, 10**7]]))
            notes.append(f"layer_range {cfg['slices'][0]['sources'][0]['layer_range']!r}")
        elif op == "method":
            cfg["merge_method"] = draw(st.sampled_from(METHODS))
            notes.append(f"merge_method {cfg['merge_method']}")
    text = yaml.safe_dump(cfg, sort_keys=False).encode()
    op = draw(st.sampled_from(["none"] * 12 + ["deep", "invalid", "nonutf8", "notmap"]))
    if op == "deep":
        d = draw(DEEP)
        text = b"merge_method: linear\nmodels: " + b"[" * d + b"]" * d + b"\n"
    elif op == "invalid":
        text = b"merge_method: [linear\nmodels:\n  - model: a\n\tparameters: {"
    elif op == "nonutf8":
        text = text + b"\n# \xff\xfe\n"
    elif op == "notmap":
        text = b"- just\n- a list\n"
    if op != "none":
        notes.append(op)
    out = draw(st.sampled_from(["folder", "folder", "folder", "gguf"]))
    return _case({"merge.yml": text}, {"out": out}, notes)


# --- tokenizer input ------------------------------------------------------------------------------------
def encode_arg(v):
    """A value as JSON: str (lone surrogates survive json), bytes, ints, floats, lists, None."""
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, list):
        return {"list": [encode_arg(x) for x in v]}
    return {"value": v}


def decode_arg(e):
    if "bytes" in e:
        return base64.b64decode(e["bytes"])
    if "float" in e:
        return float(e["float"])
    if "list" in e:
        return [decode_arg(x) for x in e["list"]]
    return e["value"]


any_text = st.one_of(st.text(max_size=40), st.text(st.characters(codec=None, categories=["Cs", "Co", "Cn", "Ll", "Zs"]),
                                                    max_size=12),
                     st.sampled_from(["abc\udcff", "\ud800", "Once upon a time", "<s>", "</s>hello<unk>", "\x00",
                                      "a" * 3000, "\u2581\u2581"]))
token_ids = st.lists(st.one_of(st.integers(-5, 400), st.sampled_from([2**31, 2**63, -2**63, 2**64])), max_size=12)
tok_arg = st.one_of(any_text, any_text, token_ids, token_ids, st.binary(max_size=16),
                    st.lists(st.one_of(any_text, edge_float, st.integers(0, 20), st.none()), max_size=4),
                    st.sampled_from([None, 1.5, 3, "hello", ["Once", "upon"], [1.9, 2.2], [[1, 2]], [True, False]]))
TOKENIZER_CALLS = ["encode_spm", "decode_spm", "encode_bpe", "decode_bpe", "model_tokenize", "model_detokenize",
                   "model_generate"]


@st.composite
def tokenizer_case(draw):
    call = draw(st.sampled_from(TOKENIZER_CALLS))
    arg = draw(tok_arg)
    return _case({}, {"call": call, "arg": encode_arg(arg)}, [f"{call}({arg!r:.60})"])


# --- SentencePiece .model files ------------------------------------------------------------------------
@st.composite
def spm_case(draw):
    n = draw(st.sampled_from([5, 16, 300]))
    raw = ff.spm_model_bytes(n, with_bytes=n >= 259, placeholder=True)
    notes = [f"{n} pieces"]
    op = draw(st.sampled_from(["corrupt", "corrupt", "none", "noise"]))
    if op == "corrupt":
        bad = draw(st.sampled_from([b"\xff\xfe\xfd\xfc", b"\xc3\x28ab", b"a\x80bc", b"\xed\xa0\x80a"]))
        raw = raw.replace(ff.PLACEHOLDER.encode(), bad, 1)
        notes.append(f"piece bytes {bad!r}")
    if op == "noise":
        raw = draw(byte_noise(raw, notes))
    return _case({"tokenizer.model": raw}, notes=notes)


# --- QuantizedTensor.from_bytes ---------------------------------------------------------------------
@st.composite
def quant_case(draw):
    qtype = draw(st.sampled_from(["q4_0", "q8_0", "f16", "f32", "q4_k", "q6_k", "bf16", "Q4_0", "q9", "", "q4_0_mse",
                                  "q4_1", "q2_k", "q3_k", "iq4_nl", "IQ4_XS"]))
    shape = draw(st.one_of(st.lists(st.sampled_from([0, 1, 2, 32, 256, -1, -32, 2**31, 2**63, 2**64]), min_size=0,
                                    max_size=4),
                           st.sampled_from([[1, 32], [2, 32], [0, 32], [0, -32], [-1, -32], [0, 2**63], [1, 2, 32],
                                            "x", None, [1.5, 32], [True, 32]])))
    nbytes = draw(st.sampled_from([0, 18, 34, 36, 64, 68, 1024, 144, 20, 40, 84, 110, 136, 272]))
    layout = draw(st.sampled_from(["bytes", "array", "strided", "float32"]))
    return _case({}, {"qtype": qtype, "shape": shape, "nbytes": nbytes, "layout": layout},
                 [f"from_bytes({layout} {nbytes}, {qtype!r}, {shape!r})"])


STRATEGIES = {
    "gguf": gguf_case, "safetensors": safetensors_case, "hf_config": hf_config_case, "llama2c": llama2c_case,
    "merge_yaml": merge_case, "tokenizer_text": tokenizer_case, "spm_model": spm_case, "quant_bytes": quant_case,
}
