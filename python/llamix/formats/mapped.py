"""Read-only memory maps of whole files, with the errors every format reader gives."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from ..errors import FormatError


def map_whole_file(path: Path, min_size: int, error: type[FormatError], too_short: str) -> tuple[mmap.mmap, int]:
    """``(map, size)`` of the file at ``path``, mapped read-only.

    Raises FileNotFoundError naming the path, or ``error`` when the file has fewer than
    ``min_size`` bytes (``too_short`` ends its message: "file too short (N bytes) <too_short>").
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < min_size:
            raise error(f"{path}: file too short ({size} bytes) {too_short}")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size
