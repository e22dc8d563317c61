"""Where a config's model references point: a local folder, a Hugging Face repo id (``org/name``,
optionally ``@revision``), either optionally with ``+LORA`` (a PEFT adapter folder or repo id,
applied while the weights stream, see lora.py).

Repo ids are resolved through ``huggingface_hub`` (imported only when one is used): the local
cache first (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``); with
``HF_HUB_OFFLINE=1`` nothing is downloaded; online, only safetensors weights, configs and
tokenizer files are fetched. ``pytorch_model.bin`` checkpoints are refused: llamix never loads a
pickle.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..formats.hub_cache import hub_cache_dir, hub_offline
from ..formats.safetensors import SafetensorsCheckpoint
from .config import ConfigError

# The files fetched for a repo: weights, configs, tokenizers, chat templates, PEFT adapters.
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                "adapter_config.json"]
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


@dataclass(frozen=True)
class ModelPath:
    path: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path


def parse_path(text: str, where: str) -> ModelPath:
    if text.count("@") > 1:
        raise ConfigError(f"{where}: {text!r} has more than one '@revision'")
    if "@" in text:
        path, rev = text.split("@")
        if not path or not rev:
            raise ConfigError(f"{where}: {text!r}: expected PATH@REVISION")
        return ModelPath(path, rev)
    return ModelPath(text)


@dataclass(frozen=True)
class ModelRef:
    """A model reference as mergekit writes it: ``PATH[@REV][+LORA[@REV]]``."""
    model: ModelPath
    lora: Optional[ModelPath] = None

    def __str__(self) -> str:
        return f"{self.model}+{self.lora}" if self.lora else str(self.model)


def parse_ref(value: Any, where: str) -> ModelRef:
    """A string (``path``, ``org/name@rev``, ``model+lora``) or mergekit's mapping form
    ``{model: {path, revision}, lora: {path, revision}}``."""
    if isinstance(value, dict):
        model, lora = value.get("model"), value.get("lora")
        unknown = set(value) - {"model", "lora", "override_architecture"}
        if unknown or value.get("override_architecture") is not None:
            raise ConfigError(f"{where}: unsupported model reference fields {sorted(unknown) or ['override_architecture']}")

        def path_of(v, w):
            if isinstance(v, str):
                return parse_path(v, w)
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                return ModelPath(v["path"], v.get("revision"))
            raise ConfigError(f"{w}: expected a path (or {{path, revision}})")
        return ModelRef(path_of(model, f"{where}.model"), path_of(lora, f"{where}.lora") if lora is not None else None)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a model folder or Hugging Face repo id")
    if Path(value).expanduser().exists():  # a local folder whose name has '+' or '@' in it
        return ModelRef(ModelPath(value))
    parts = value.split("+")
    if len(parts) > 2:
        raise ConfigError(f"{where}: {value!r}: expected MODEL or MODEL+LORA")
    return ModelRef(parse_path(parts[0], where), parse_path(parts[1], where) if len(parts) == 2 else None)


def _refuse_pickles(folder: Path, where: str, what: str = "model") -> None:
    pickles = [p for p in PICKLES if (folder / p).exists()] + [p.name for p in folder.glob("pytorch_model-*.bin")]
    if pickles and not any(folder.glob("*.safetensors")):
        raise ConfigError(
            f"{where}: {folder} holds {pickles[0]} (a pickle), which llamix never loads. Convert the {what} to "
            f"safetensors first, e.g. with transformers: "
            f"AutoModelForCausalLM.from_pretrained('{folder}').save_pretrained('OUT', safe_serialization=True) "
            f"(for a PEFT adapter: PeftModel.save_pretrained with safe_serialization=True), or with the "
            f"safetensors convert script (https://huggingface.co/spaces/safetensors/convert)")


def from_hub(mp: ModelPath, where: str, patterns=None) -> Path:
    """The snapshot folder of a repo: from the local cache, else downloaded (safetensors, configs,
    tokenizer files only) unless HF_HUB_OFFLINE is set."""
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(f"{where}: {mp} is not a local folder, and resolving Hugging Face repo ids needs the "
                          "huggingface_hub package (pip install huggingface_hub)") from None
    patterns = patterns or HUB_PATTERNS
    cache = hub_cache_dir()
    try:
        return Path(huggingface_hub.snapshot_download(mp.path, revision=mp.revision, cache_dir=cache,
                                                      local_files_only=True, allow_patterns=patterns))
    except Exception:  # noqa: BLE001 - any failure here means "not in the cache"
        pass
    if hub_offline():  # (huggingface_hub's own message here tells a Python caller to pass local_files_only=False)
        raise ConfigError(f"{where}: {mp} is neither a local folder nor in the Hugging Face cache at {cache}, "
                          "and HF_HUB_OFFLINE is set, so nothing is downloaded") from None
    try:
        files = huggingface_hub.list_repo_files(mp.path, revision=mp.revision)
        if not any(f.endswith(".safetensors") for f in files):
            pickled = [f for f in files if f.endswith(".bin")]
            if pickled:
                raise ConfigError(f"{where}: the Hub repo {mp} has only {pickled[0]} (a pickle), which llamix never "
                                  "loads; convert it to safetensors first (https://huggingface.co/spaces/safetensors/convert)")
        return Path(huggingface_hub.snapshot_download(mp.path, revision=mp.revision, cache_dir=cache,
                                                      allow_patterns=patterns))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: report it with the field
        raise ConfigError(f"{where}: {mp} is not a local folder and could not be fetched from the Hugging Face Hub "
                          f"({type(e).__name__}: {e})") from None


def resolve_folder(mp: ModelPath, base_dir: Path, where: str, patterns=None) -> Path:
    """A local folder (as given, then relative to the config's folder), else a Hub repo id."""
    candidates = [Path(mp.path).expanduser(), base_dir / mp.path]
    for c in candidates:
        if c.exists() and mp.revision is None:
            return c
    if REPO_ID.match(mp.path):
        # 'models/llama-bse' next to an existing 'models' folder is a mistyped local path: say so at
        # once instead of asking the Hub (offline, huggingface_hub retries for about 25 s)
        org = mp.path.split("/")[0]
        local = [c.parent for c in candidates if c.parent.is_dir() and c.parent.name == org]
        if local and mp.revision is None:
            raise ConfigError(f"{where}: model {str(mp)!r} is not a local folder: {local[0]} exists but holds no "
                              f"{mp.path.split('/')[1]!r} (to mean the Hugging Face repo {mp.path}, write "
                              f"{mp.path}@main)")
        return from_hub(mp, where, patterns)
    raise ConfigError(f"{where}: model {str(mp)!r} is not a local folder (looked in {candidates[0]} and "
                      f"{candidates[1]}) nor a Hugging Face repo id (org/name)")


def read_config(folder: Path, where: str) -> dict:
    if not (folder / "config.json").exists():
        return {}
    try:
        return json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: {folder / 'config.json'} is not valid JSON ({e})") from None


def open_weights(path: Path, where: str) -> SafetensorsCheckpoint:
    if path.is_file() and path.suffix != ".safetensors":
        raise ConfigError(f"{where}: {path} is not a Hugging Face folder: merge takes Hugging Face folders "
                          "(config.json and safetensors), not GGUF or llama2.c files")
    folder = path if path.is_dir() else path.parent
    _refuse_pickles(folder, where)
    try:
        return SafetensorsCheckpoint(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{where}: {e} (only safetensors checkpoints are supported)") from None
