"""Byte-level writers the fuzz mutators build inputs with, and the tiny well-formed models they start
from. Independent of llamix (numpy, yaml and sentencepiece's protobuf module only): the writers
write whatever they are given, wrong types and impossible sizes included, so a mutated structure
reaches the reader exactly as drawn.

Every base input is deterministic (fixed seeds), so a saved case replays the same bytes.
"""
from __future__ import annotations

import functools
import json
import struct

import numpy as np

# --- GGUF -----------------------------------------------------------------------------------------
# value types (gguf.md)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
              I64: "<q", F64: "<d"}
GGUF_MAGIC = b"GGUF"


class Deep:
    """A GGUF array nested ``depth`` levels deep (written without recursion)."""

    def __init__(self, depth: int):
        self.depth = depth

    def __repr__(self):
        return f"Deep({self.depth})"


def pack_scalar(vtype: int, v) -> bytes:
    """A scalar of ``vtype``; a value that does not fit is wrapped into the type's bits (the
    file says what it says; the reader must cope)."""
    fmt = SCALAR_FMT[vtype]
    if vtype in (F32, F64):
        with np.errstate(over="ignore"):  # beyond float32: written as inf, as a float32 cast gives
            return np.array(float(v), dtype="<f4" if vtype == F32 else "<f8").tobytes()
    size = struct.calcsize(fmt)
    n = int(v) & ((1 << (8 * size)) - 1)
    return n.to_bytes(size, "little")


def pack_string(s) -> bytes:
    b = s if isinstance(s, (bytes, bytearray)) else str(s).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(b)) + bytes(b)


def pack_value(vtype: int, v) -> bytes:
    """``v`` as GGUF value bytes: scalars, strings (str or raw bytes), arrays as ``(element type,
    items)`` or ``(element type, items, claimed count)``, :class:`Deep` nesting."""
    if vtype in SCALAR_FMT:
        return pack_scalar(vtype, v)
    if vtype == STR:
        return pack_string(v)
    if vtype == ARR:
        if isinstance(v, Deep):
            one = struct.pack("<IQ", ARR, 1)
            return one * (v.depth - 1) + struct.pack("<IQ", U8, 0)
        etype, items = v[0], v[1]
        count = v[2] if len(v) > 2 else len(items)
        out = bytearray(struct.pack("<IQ", etype, count & (2**64 - 1)))
        for x in items:
            out += pack_value(etype, x) if etype in SCALAR_FMT or etype in (STR, ARR) else b""
        return bytes(out)
    return b""  # an unknown value type: no payload


def gguf_bytes(kv: list, tensors: list, data: bytes, *, magic: bytes = GGUF_MAGIC, version: int = 3,
               n_tensors: int | None = None, n_kv: int | None = None, alignment: int = 32) -> bytes:
    """A GGUF file: ``kv`` [(key, vtype, value)], ``tensors`` [(name, ne list, type id, offset)],
    then ``data`` at the next multiple of ``alignment``."""
    out = bytearray(magic)
    out += struct.pack("<I", version & 0xFFFFFFFF)
    out += struct.pack("<QQ", (len(tensors) if n_tensors is None else n_tensors) & (2**64 - 1),
                       (len(kv) if n_kv is None else n_kv) & (2**64 - 1))
    for key, vtype, value in kv:
        out += pack_string(key) + struct.pack("<I", vtype & 0xFFFFFFFF) + pack_value(vtype, value)
    for name, ne, type_id, offset in tensors:
        out += pack_string(name) + struct.pack("<I", len(ne) & 0xFFFFFFFF)
        out += b"".join(struct.pack("<Q", int(d) & (2**64 - 1)) for d in ne)
        out += struct.pack("<IQ", type_id & 0xFFFFFFFF, int(offset) & (2**64 - 1))
    align = alignment if alignment > 0 and not alignment & (alignment - 1) else 32
    out += b"\0" * (-len(out) % align)
    return bytes(out + data)


# the tiny llama every GGUF input starts from
G_DIM, G_LAYERS, G_HEADS, G_KV, G_HIDDEN = 32, 2, 2, 1, 32
SPM_TOKENS = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "c", "d", "e", "\u2581a", "\u2581b", "ab", "cd", "\u2581the",
              "x", "y"]
SPM_TYPES = [2, 3, 3] + [1] * (len(SPM_TOKENS) - 3)


def base_gguf_kv() -> list:
    n = len(SPM_TOKENS)
    return [
        ["general.architecture", STR, "llama"],
        ["general.name", STR, "fuzz"],
        ["llama.context_length", U32, 64],
        ["llama.embedding_length", U32, G_DIM],
        ["llama.block_count", U32, G_LAYERS],
        ["llama.feed_forward_length", U32, G_HIDDEN],
        ["llama.attention.head_count", U32, G_HEADS],
        ["llama.attention.head_count_kv", U32, G_KV],
        ["llama.attention.layer_norm_rms_epsilon", F32, 1e-5],
        ["llama.rope.freq_base", F32, 10000.0],
        ["llama.rope.dimension_count", U32, G_DIM // G_HEADS],
        ["tokenizer.ggml.model", STR, "llama"],
        ["tokenizer.ggml.tokens", ARR, (STR, list(SPM_TOKENS))],
        ["tokenizer.ggml.scores", ARR, (F32, [-float(i) for i in range(n)])],
        ["tokenizer.ggml.token_type", ARR, (I32, list(SPM_TYPES))],
        ["tokenizer.ggml.bos_token_id", U32, 1],
        ["tokenizer.ggml.eos_token_id", U32, 2],
        ["tokenizer.ggml.add_bos_token", BOOL, 1],
    ]


def _q8_0(rows: int, k: int, rng) -> bytes:
    # values from a short cycle: the saved cases compress well
    block = np.float16(0.01).tobytes() + rng.integers(-100, 100, 32, dtype=np.int8).tobytes()
    return block * (rows * k // 32)


def base_gguf_tensors() -> tuple[list, bytes]:
    """[(name, ne, type id, offset)] (ne: ggml order) and the data section."""
    rng = np.random.default_rng(0)
    kv_dim = G_KV * (G_DIM // G_HEADS)
    specs = [("token_embd.weight", (len(SPM_TOKENS), G_DIM))]
    for i in range(G_LAYERS):
        b = f"blk.{i}."
        specs += [(b + "attn_norm.weight", (G_DIM,)), (b + "attn_q.weight", (G_DIM, G_DIM)),
                  (b + "attn_k.weight", (kv_dim, G_DIM)), (b + "attn_v.weight", (kv_dim, G_DIM)),
                  (b + "attn_output.weight", (G_DIM, G_DIM)), (b + "ffn_norm.weight", (G_DIM,)),
                  (b + "ffn_gate.weight", (G_HIDDEN, G_DIM)), (b + "ffn_up.weight", (G_HIDDEN, G_DIM)),
                  (b + "ffn_down.weight", (G_DIM, G_HIDDEN))]
    specs += [("output_norm.weight", (G_DIM,)), ("output.weight", (len(SPM_TOKENS), G_DIM))]
    tensors, data = [], bytearray()
    for name, shape in specs:
        if len(shape) == 1:
            raw, type_id = np.ones(shape, np.float32).tobytes(), 0
        else:
            raw, type_id = _q8_0(shape[0], shape[1], rng), 8
        tensors.append([name, list(reversed(shape)), type_id, len(data)])
        data += raw
        data += b"\0" * (-len(data) % 32)
    return tensors, bytes(data)


@functools.lru_cache(maxsize=1)
def base_gguf() -> bytes:
    tensors, data = base_gguf_tensors()
    return gguf_bytes(base_gguf_kv(), tensors, data)


# --- Hugging Face folders (safetensors + config.json) ---------------------------------------------
H_DIM, H_LAYERS, H_FFN, H_VOCAB = 16, 2, 24, 16
HF_LAYER = {
    "self_attn.q_proj.weight": (H_DIM, H_DIM), "self_attn.k_proj.weight": (H_DIM // 2, H_DIM),
    "self_attn.v_proj.weight": (H_DIM // 2, H_DIM), "self_attn.o_proj.weight": (H_DIM, H_DIM),
    "mlp.gate_proj.weight": (H_FFN, H_DIM), "mlp.up_proj.weight": (H_FFN, H_DIM), "mlp.down_proj.weight": (H_DIM, H_FFN),
    "input_layernorm.weight": (H_DIM,), "post_attention_layernorm.weight": (H_DIM,),
}


def base_hf_config(layers: int = H_LAYERS) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": H_VOCAB, "hidden_size": H_DIM,
            "intermediate_size": H_FFN, "num_hidden_layers": layers, "num_attention_heads": 2,
            "num_key_value_heads": 1, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}


def hf_tensors(seed: int = 0, layers: int = H_LAYERS) -> dict:
    rng = np.random.default_rng(seed)

    def w(shape):  # multiples of 1/32 from a short list: the saved cases compress well
        return (rng.integers(-8, 9, shape) / 32).astype(np.float32)

    t = {"model.embed_tokens.weight": w((H_VOCAB, H_DIM))}
    for i in range(layers):
        for name, shape in HF_LAYER.items():
            t[f"model.layers.{i}.{name}"] = w(shape)
    t["model.norm.weight"] = np.ones(H_DIM, np.float32)
    t["lm_head.weight"] = w((H_VOCAB, H_DIM))
    return t


def st_header_and_data(tensors: dict) -> tuple[dict, bytes]:
    header, data = {}, bytearray()
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.tobytes()
    return header, bytes(data)


def st_bytes(header, data: bytes, *, raw_header: bytes | None = None, length: int | None = None) -> bytes:
    """A safetensors file: u64 header length, the header (any JSON value, or raw bytes), the data."""
    h = raw_header if raw_header is not None else json.dumps(header, allow_nan=True).encode()
    n = len(h) if length is None else length
    return struct.pack("<Q", n & (2**64 - 1)) + h + data


@functools.lru_cache(maxsize=4)
def hf_folder_files(seed: int = 0, layers: int = H_LAYERS) -> dict:
    """{file name: bytes} of a well-formed tiny Hugging Face folder (no tokenizer)."""
    header, data = st_header_and_data(hf_tensors(seed, layers))
    return {"config.json": json.dumps(base_hf_config(layers)).encode(), "model.safetensors": st_bytes(header, data)}


# --- llama2.c ---------------------------------------------------------------------------------------
L2C_MAGIC = 0x616B3432
L2C_BASE = {"dim": 8, "hidden_dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 16, "seq_len": 16}
L2C_FIELDS = tuple(L2C_BASE)


def l2c_floats(h: dict, version: int) -> int | None:
    """float32 count of the weights a header implies (None when absurd)."""
    try:
        dim, hidden, L, nh, nkv, vocab, seq = (int(h[f]) for f in L2C_FIELDS)
        vocab = abs(vocab)
        hd = dim // nh
        kv = nkv * hd
        n = vocab * dim + L * (2 * dim + dim * dim * 2 + 2 * kv * dim + 3 * hidden * dim) + dim
        if version == 0:
            n += seq * hd  # freq_cis_real + imag
        if (version == 0 and int(h["vocab_size"]) < 0) or (version == 1 and not h.get("shared", 1)):
            n += vocab * dim
        return n if 0 <= n < 1 << 20 else None
    except (ZeroDivisionError, ValueError, KeyError):
        return None


def l2c_bytes(h: dict, version: int, body_floats: int | None) -> bytes:
    ints = b"".join((int(h[f]) & 0xFFFFFFFF).to_bytes(4, "little") for f in L2C_FIELDS)  # int32, wrapped
    if version == 1:
        head = struct.pack("<I", L2C_MAGIC) + (int(h.get("version", 1)) & 0xFFFFFFFF).to_bytes(4, "little") + ints + bytes([h.get("shared", 1) & 0xFF])
        head += b"\0" * (256 - len(head))
    else:
        head = ints
    rng = np.random.default_rng(1)
    body = (rng.integers(-8, 9, body_floats or 0) / 32).astype("<f4").tobytes()
    return head + body


# --- SentencePiece .model -------------------------------------------------------------------------
PLACEHOLDER = "QQQQ"  # a piece whose bytes a mutator may replace (protobuf writes only valid UTF-8)


def spm_model_bytes(n_pieces: int = 16, with_bytes: bool = False, placeholder: bool = False) -> bytes:
    """A SentencePiece BPE model of ``n_pieces`` pieces (<unk> <s> </s>, then letters, padded)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    S = pb.ModelProto.SentencePiece
    for piece, t in (("<unk>", S.UNKNOWN), ("<s>", S.CONTROL), ("</s>", S.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=t)
    if with_bytes:
        for b in range(256):
            proto.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=S.BYTE)
    pieces = ["\u2581", "a", "b", "c", "d", "e", "\u2581a", "ab", "cd", "x", "y", "z", "\u2581the", "o", "n", "ce"]
    if placeholder:
        pieces.insert(0, PLACEHOLDER)
    for i, p in enumerate(pieces):
        if len(proto.pieces) >= n_pieces:
            break
        proto.pieces.add(piece=p, score=-float(i), type=S.NORMAL)
    while len(proto.pieces) < n_pieces:
        proto.pieces.add(piece=f"<unused{len(proto.pieces)}>", score=0.0, type=S.UNUSED)
    ts = proto.trainer_spec
    ts.model_type, ts.vocab_size, ts.byte_fallback = pb.TrainerSpec.BPE, n_pieces, with_bytes
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = proto.normalizer_spec
    ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = "identity", True, False, True
    return proto.SerializeToString()
