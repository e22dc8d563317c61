"""From a validated config and the input folders to the list of output tensors, each with its
inputs and fully resolved parameters. Everything that can be wrong (missing models or tensors,
shape mismatches, parameter values) is found here, before the executor reads a single weight.

Output order follows mergekit: tensors before the layers (embeddings), then each slice's layers
renumbered consecutively, then the tensors after the layers (final norm, output head). Embeddings
come from the first slice's sources, the final norm and head from the last slice's.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import FormatError
from .chat_templates import resolve_chat_template
from .config import ConfigError, MergeConfig, Slice, Source
from .methods import METHODS, MergeMethod, TensorJob, get_method
from .params import layer_t, resolve
from .sources import open_weights, parse_ref, read_config, resolve_folder
from .vocab import OutputVocab, build_vocab, is_vocab_tensor
from .weights import ModelWeights, open_lora

LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<index>\d+)\.(?P<rest>.+)$")
FLOAT_TYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


@dataclass
class ModelInfo:
    """One input: its folder's config.json and weights (with a LoRA applied, for model+lora)."""
    ref: str
    path: Path
    config: dict
    weights: ModelWeights
    lora_path: Optional[Path] = None

    def num_layers(self) -> int:
        """The layers the weights hold (config.json's num_hidden_layers must agree)."""
        idx = {int(m["index"]) for name in self.weights.keys() if (m := LAYER.match(name))}
        held = max(idx) + 1 if idx else 0
        n = self.config.get("num_hidden_layers")
        if n is not None and n != held:
            raise FormatError(f"{self.path / 'config.json'}: num_hidden_layers = {n!r}, but the weights hold "
                              f"{held} layers")
        return held


@dataclass
class TensorTask:
    """One output tensor: where its inputs come from and every parameter, resolved."""
    name: str
    shape: tuple[int, ...]
    inputs: list[tuple[str, str]]  # (model ref, tensor name) in input order
    base_index: Optional[int]
    params: dict
    input_params: list[dict]
    work: str
    out: str
    align: bool = False  # a vocabulary tensor whose rows are realigned to the output vocabulary

    def job(self, arrays: list[tuple], seed: int = 0) -> TensorJob:
        return TensorJob(self.name, self.shape, arrays, self.base_index, self.params, self.input_params,
                         self.work, self.out, seed)


@dataclass
class MergePlan:
    config: MergeConfig
    method: MergeMethod
    models: dict[str, ModelInfo]
    tensors: list[TensorTask]
    num_layers: int
    out_config: dict            # config.json of the output
    tokenizer_from: Optional[ModelInfo]
    input_bytes: int = 0        # bytes read from the inputs (for throughput)
    notes: list[str] = field(default_factory=list)
    vocab: Optional[OutputVocab] = None    # a built output vocabulary (tokenizer_source / tokenizer)
    chat_template: Optional[str] = None    # the template text to write into tokenizer_config.json


def open_model(ref: str, base_dir: Path, where: str) -> ModelInfo:
    """A model reference (folder, Hub repo id, either with +LORA) opened for reading."""
    mr = parse_ref(ref, where)
    path = resolve_folder(mr.model, base_dir, where)
    folder = path if path.is_dir() else path.parent
    config = read_config(folder, where)
    checkpoint = open_weights(path, where)
    lora = resolve_folder(mr.lora, base_dir, f"{where} (LoRA)") if mr.lora else None
    return ModelInfo(ref, folder, config, open_lora(checkpoint, lora, where), lora)


def _promote(dtypes: list[str]) -> str:
    return dtypes[0] if len(set(dtypes)) == 1 else "float32"


def build_plan(cfg: MergeConfig, out_dtype: Optional[str] = None, allow_crimes: bool = False) -> MergePlan:
    """The plan of a validated config: every input opened and every check made (ConfigError
    naming the config's file and the field, or an error naming the input file). allow_crimes:
    merge models whose config.json names different architectures (mergekit's --allow-crimes);
    refused otherwise."""
    try:
        return _build_plan(cfg, out_dtype, allow_crimes)
    except ConfigError as e:
        if str(e).startswith(cfg.source):
            raise
        raise ConfigError(f"{cfg.source}: {e}") from None


def _build_plan(cfg: MergeConfig, out_dtype: Optional[str] = None, allow_crimes: bool = False) -> MergePlan:
    method = get_method(cfg.merge_method)
    where_of = _first_mention(cfg)
    models = {ref: open_model(ref, cfg.base_dir, where_of[ref]) for ref in cfg.referenced_models()}
    archs = {ref: tuple(m.config.get("architectures") or ()) for ref, m in models.items() if m.config}
    if not allow_crimes and len(set(archs.values())) > 1:
        detail = ", ".join(f"{ref}: {'/'.join(a) or '?'}" for ref, a in archs.items())
        raise ConfigError(f"models: different architectures ({detail}); mixing them needs allow_crimes "
                          "(--allow-crimes), as in mergekit")
    slices = _as_slices(cfg, models)
    base_ref = cfg.base_model or slices[0].sources[0].model
    vocab = build_vocab(cfg, models, base_ref, where_of)
    chat_template = resolve_chat_template(cfg.chat_template, [m.path for m in models.values()])
    known = {p.name for p in method.parameters}
    _check_parameter_names(cfg, slices, known, method.name)
    for sl in slices:
        method.check_inputs([s.model for s in sl.sources], sl.base_model or cfg.base_model, sl.where)

    ref_model = models[slices[0].sources[0].model]
    layered: dict[int, list[tuple[str, str]]] = {}  # layer index -> [(prefix, rest)] in file order
    pre, post = [], []
    for name in ref_model.weights.keys():
        m = LAYER.match(name)
        if m:
            layered.setdefault(int(m["index"]), []).append((m["prefix"], m["rest"]))
        elif "embed" in name:
            pre.append(name)
        else:
            post.append(name)
    if cfg.models:
        _check_same_names(models, [s.model for s in slices[0].sources])

    planner = _Planner(cfg, method, models, out_dtype, vocab)
    first, last = slices[0], slices[-1]
    for name in pre:
        planner.add(name, first, [(s, name) for s in first.sources], 0.0)
    out_layer = 0
    for sl in slices:
        length = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        for i in range(length):
            template = layered.get(sl.sources[0].layer_range[0] + i) or layered.get(0, [])
            for prefix, rest in template:
                inputs = [(s, f"{prefix}.{s.layer_range[0] + i}.{rest}") for s in sl.sources]
                planner.add(f"{prefix}.{out_layer}.{rest}", sl, inputs, layer_t(i, length))
            out_layer += 1
    for name in post:
        planner.add(name, last, [(s, name) for s in last.sources], 0.0)

    out_config = dict(models[base_ref].config)
    if not out_config:
        raise ConfigError(f"base_model: {models[base_ref].path} has no config.json to base the output's on")
    out_types = {t.out for t in planner.tasks}
    out_config["torch_dtype"] = out_types.pop() if len(out_types) == 1 else "float32"
    if "num_hidden_layers" in out_config or out_layer:
        out_config["num_hidden_layers"] = out_layer
    if vocab is not None:
        out_config["vocab_size"] = vocab.size
    plan = MergePlan(cfg, method, models, planner.tasks, out_layer, out_config,
                     _tokenizer_model(cfg, models, base_ref), planner.input_bytes, vocab=vocab,
                     chat_template=chat_template)
    return plan


def _first_mention(cfg: MergeConfig) -> dict[str, str]:
    where = {}
    if cfg.base_model:
        where[cfg.base_model] = "base_model"
    for s in cfg.models or []:
        where.setdefault(s.model, f"{s.where}.model")
    for sl in cfg.slices or []:
        for s in sl.sources:
            where.setdefault(s.model, f"{s.where}.model")
        if sl.base_model:
            where.setdefault(sl.base_model, f"{sl.where}.base_model")
    return where


def _as_slices(cfg: MergeConfig, models: dict[str, ModelInfo]) -> list[Slice]:
    """`models:` is one slice over every layer; the base is added as an input if not listed."""
    if cfg.slices:
        for sl in cfg.slices:
            for s in sl.sources:
                n = models[s.model].num_layers()
                if s.layer_range[1] > n:
                    raise ConfigError(f"{s.where}.layer_range: {list(s.layer_range)} exceeds the {n} layers of "
                                      f"{s.model}")
        return cfg.slices
    sources = []
    for s in cfg.models:
        sources.append(Source(s.model, s.parameters, (0, models[s.model].num_layers()), s.where))
    if cfg.base_model and cfg.base_model not in [s.model for s in cfg.models]:
        sources.append(Source(cfg.base_model, {}, (0, models[cfg.base_model].num_layers()), "base_model"))
    counts = {s.layer_range[1] for s in sources}
    if len(counts) > 1:
        detail = ", ".join(f"{s.model}: {s.layer_range[1]}" for s in sources)
        raise ConfigError(f"models: the models have different numbers of layers ({detail}); use slices")
    return [Slice(sources, {}, None, "models")]


def _check_parameter_names(cfg: MergeConfig, slices: list[Slice], known: set[str], method: str) -> None:
    """A parameter another method takes (``density`` on linear, a config moved from one method to
    another) is ignored with a warning, as mergekit ignores it; a name no method takes is a typo
    and refused (mergekit would ignore it silently)."""
    scopes = [("parameters", cfg.parameters)]
    for sl in slices:
        scopes.append((f"{sl.where}.parameters", sl.parameters))
        scopes += [(f"{s.where}.parameters", s.parameters) for s in sl.sources]
    elsewhere = {p.name for m in METHODS.values() for p in m.parameters} - known
    for where, params in scopes:
        for name in params or {}:
            if name in elsewhere:
                warnings.warn(f"{where}.{name}: {method} does not use {name}; ignored, as mergekit ignores it",
                              stacklevel=2)
            elif name not in known:
                raise ConfigError(f"{where}.{name}: not a parameter of {method} or of any other method "
                                  f"({method}'s parameters: {', '.join(sorted(known)) or 'none'})")


def _check_same_names(models: dict[str, ModelInfo], refs: list[str]) -> None:
    first = models[refs[0]]
    names = set(first.weights.keys())
    for ref in refs[1:]:
        other = set(models[ref].weights.keys())
        if other != names:
            missing = sorted(names - other)
            extra = sorted(other - names)
            if missing:
                raise ConfigError(f"tensor {missing[0]!r} is in {first.ref} but not in {ref} "
                                 f"({len(missing)} missing); the models do not have the same architecture")
            raise ConfigError(f"tensor {extra[0]!r} is in {ref} but not in {first.ref} ({len(extra)} extra); "
                             "the models do not have the same architecture")


def _tokenizer_model(cfg: MergeConfig, models: dict[str, ModelInfo], base_ref: str) -> Optional[ModelInfo]:
    """Whose tokenizer files the output starts from: the base's (the first model's without a base),
    or the model named by tokenizer_source / tokenizer.source."""
    src = cfg.tokenizer.source if cfg.tokenizer is not None else cfg.tokenizer_source
    if src is None or src in ("base", "union"):
        return models[base_ref]
    if src in models:
        return models[src]
    return open_model(src, cfg.base_dir, "tokenizer_source")


class _Planner:
    def __init__(self, cfg: MergeConfig, method: MergeMethod, models: dict[str, ModelInfo], out_dtype: Optional[str],
                 vocab: Optional[OutputVocab] = None):
        self.cfg, self.method, self.models, self.out_dtype, self.vocab = cfg, method, models, out_dtype, vocab
        self.tasks: list[TensorTask] = []
        self.input_bytes = 0

    def add(self, out_name: str, sl: Slice, inputs: list[tuple[Source, str]], t: float) -> None:
        cfg, method = self.cfg, self.method
        shapes, dtypes = [], []
        for src, name in inputs:
            w = self.models[src.model].weights
            if name not in w:
                raise ConfigError(f"tensor {name!r} is missing from {src.model} ({src.where}); needed for {out_name}")
            shapes.append(tuple(w.shape(name)))
            dt = w.dtype(name)
            if dt not in FLOAT_TYPES:
                raise ConfigError(f"tensor {name!r} in {src.model} has dtype {dt}; only float32/float16/bfloat16 "
                                 "tensors can be merged")
            dtypes.append(FLOAT_TYPES[dt])
            self.input_bytes += w.nbytes(name)
        align = False
        if self.vocab is not None and all(
                is_vocab_tensor(name, sh, self.models[src.model].config.get("vocab_size"))
                for (src, name), sh in zip(inputs, shapes)):
            align = not all(self.vocab.is_identity(src.model, sh[0]) for (src, _), sh in zip(inputs, shapes))
            shapes = [(self.vocab.size,) + sh[1:] for sh in shapes]
        if len(set(shapes)) > 1:
            detail = ", ".join(f"{src.model}: {list(s)}" for (src, _), s in zip(inputs, shapes))
            hint = (" (different vocabularies: set tokenizer_source: union, or a tokenizer: section, to align "
                    "them)") if "embed" in out_name or "lm_head" in out_name else ""
            raise ConfigError(f"tensor {out_name}: shapes differ between models ({detail}){hint}")
        base = sl.base_model or cfg.base_model
        refs = [src.model for src, _ in inputs]
        base_index = refs.index(base) if (base in refs and method.base != "ignored") else None
        shared_scopes = [(sl.parameters, f"{sl.where}.parameters"), (cfg.parameters, "parameters")]
        params = {p.name: resolve(p, shared_scopes, out_name, t) for p in method.parameters if p.scope == "global"}
        input_params = []
        for i, (src, name) in enumerate(inputs):
            scopes = [(s.parameters, f"{s.where}.parameters") for s in sl.sources if s.model == src.model]
            scopes += shared_scopes
            per = {}
            for p in method.parameters:
                if p.scope == "input" or (p.scope == "non_base" and i != base_index):
                    per[p.name] = resolve(p, scopes, name, t, what=f"{src.model} ({name})")
            input_params.append(per)
        work = cfg.dtype or _promote(dtypes)
        out = self.out_dtype or cfg.out_dtype or work
        task = TensorTask(out_name, shapes[0], [(src.model, name) for src, name in inputs], base_index, params,
                          input_params, work, out, align)
        method.check_params(task.job([(None, d) for d in dtypes]), out_name)
        self.tasks.append(task)
