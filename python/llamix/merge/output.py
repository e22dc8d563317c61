"""The merge's output as a Hugging Face folder: sharded safetensors with an index, config.json
(dtype and layer count updated), the tokenizer files of the chosen source, and a README holding
the config. Everything is written into a temporary sibling folder that is renamed into place at
the end, so an interrupted merge never leaves a folder that looks complete."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ArgumentError
from ..formats.safetensors import SafetensorsWriter
from .kernels import FileTarget
from .plan import MergePlan, TensorTask

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def temporary_folder(out_dir: Path) -> Path:
    """The hidden sibling an output folder is written into (renamed into place when complete).
    Those a killed process left behind (SIGKILL, out of memory: no handler ran) for the same OUT
    are removed first; a live process's are left alone."""
    prefixes = (f".{out_dir.name}.llamix-tmp-", f".{out_dir.name}.llamix-old-")
    if out_dir.parent.is_dir():
        for p in out_dir.parent.iterdir():
            pid = next((p.name[len(x):] for x in prefixes if p.name.startswith(x)), "")
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    return out_dir.parent / f"{prefixes[0]}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def parse_size(size) -> int:
    """Bytes from 5GB / 500MB / 2.5G / 1000000 (decimal units, as Hugging Face uses)."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        n = int(size)
    else:
        text = str(size).strip().upper().replace(" ", "")
        units = {"TB": 1e12, "T": 1e12, "GB": 1e9, "G": 1e9, "MB": 1e6, "M": 1e6, "KB": 1e3, "K": 1e3, "B": 1}
        for u, f in units.items():
            if text.endswith(u):
                try:
                    n = int(float(text[: -len(u)]) * f)
                except ValueError:
                    raise ArgumentError(f"shard size {size!r}: expected e.g. 5GB, 500MB or a byte count") from None
                break
        else:
            try:
                n = int(text)
            except ValueError:
                raise ArgumentError(f"shard size {size!r}: expected e.g. 5GB, 500MB or a byte count") from None
    if n <= 0:
        raise ArgumentError(f"shard size {size!r} must be positive")
    return n


class HFFolderWriter:
    """Writes the merged tensors as a Hugging Face model folder at ``out_dir`` (atomically).

    Every shard's header is written first and each tensor goes to its offset, so tensors can be
    written in any order by several threads: with several shards, ``concurrency`` writer threads
    (up to ``write_threads``, default 2) write them in parallel. copy_tokenizer: the tokenizer
    files of the source model (a built vocabulary is always written); write_model_card: README.md
    and mergekit_config.yml holding the config. ``overwrite``: replace an existing ``out_dir``
    (only once the new folder is complete)."""

    def __init__(self, out_dir: str | os.PathLike, shard_size="5GB", copy_tokenizer: bool = True,
                 write_model_card: bool = True, write_threads: int | None = None, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.shard_bytes = parse_size(shard_size)
        self.copy_tokenizer, self.write_model_card = copy_tokenizer, write_model_card
        self.write_threads = max(1, write_threads or 2)
        self.concurrency = 1
        self.overwrite = overwrite
        if not overwrite and self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise FileExistsError(f"{self.out_dir}: already exists and is not an empty folder")
        self.tmp = temporary_folder(self.out_dir)
        self._st = None
        self._plan = None

    def begin(self, plan: MergePlan) -> None:
        self._plan = plan
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        manifest = [(t.name, SHORT[t.out], t.shape) for t in plan.tensors]
        self._st = SafetensorsWriter(self.tmp, manifest, self.shard_bytes, {"format": "pt", "merged_by": "llamix"},
                                     any_order=True)
        self.concurrency = min(len(self._st.files), self.write_threads)

    def dtype_for(self, task: TensorTask) -> str:
        return task.out

    def write(self, name: str, array: np.ndarray) -> None:
        self._st.write(name, array)

    def target(self, task: TensorTask) -> FileTarget:
        """Where the tensor's bytes go (the merge kernels write them there; counted as written)."""
        return FileTarget(*self._st.reserve(task.name))

    def finish(self) -> None:
        plan = self._plan
        self._st.close()
        (self.tmp / "config.json").write_text(json.dumps(plan.out_config, indent=2) + "\n")
        write_tokenizer(plan, self.tmp, self.copy_tokenizer)
        if self.write_model_card:
            (self.tmp / "README.md").write_text(readme(plan))
            (self.tmp / "mergekit_config.yml").write_text(plan.config.text.strip() + "\n")
        old = None
        if self.out_dir.exists() or self.out_dir.is_symlink():  # an empty folder, or overwrite: set it aside
            old = self.out_dir.parent / f".{self.out_dir.name}.llamix-old-{os.getpid()}"
            os.replace(self.out_dir, old)
        os.replace(self.tmp, self.out_dir)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()

    def abort(self) -> None:
        if self._st is not None:
            self._st.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_tokenizer(plan: MergePlan, out: Path, copy: bool = True) -> None:
    """The output's tokenizer files: the merged vocabulary's, or (copy) the source model's copied;
    then the chat template, if the config sets one, into tokenizer_config.json."""
    if plan.vocab is not None:
        plan.vocab.write(out, plan.chat_template)
        return
    if not copy:
        return
    if plan.tokenizer_from is not None:
        for f in TOKENIZER_FILES:
            src = plan.tokenizer_from.path / f
            if src.is_file():
                shutil.copyfile(src, out / f)
    if plan.chat_template is not None:
        path = out / "tokenizer_config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        config["chat_template"] = plan.chat_template
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        (out / "chat_template.jinja").unlink(missing_ok=True)  # it would take precedence over the config's


def readme(plan: MergePlan) -> str:
    cfg = plan.config
    return (f"---\ntags:\n- merge\n- llamix\n---\n# Merged model\n\nMade with llamix's `{plan.method.name}` merge "
            f"({plan.method.paper}) of {len(plan.models)} models into {plan.num_layers} layers.\n\n"
            f"## Configuration\n\n```yaml\n{cfg.text.strip()}\n```\n")
