"""Where huggingface_hub keeps its files, read from the environment at each call (huggingface_hub
reads HF_HUB_CACHE / HF_HUB_OFFLINE once, when it is imported; a process or a test that sets them
later must still be obeyed). Here rather than in llamix.loaders, so that a merge resolves Hub ids
without importing the inference loaders (~30 ms of a merge's start)."""
from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: nothing is downloaded."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
