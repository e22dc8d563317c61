"""The NEON variant on an x86 machine: it must compile with the aarch64 cross compiler
(-Wall -Wextra clean), and where qemu-user is present, tests/native/isa_check.cpp runs the NEON
kernels against the scalar reference (block matmuls bit for bit). Skips when the tools are absent."""
from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
FLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", f"-I{CSRC}"]
NEON = ["-march=armv8.2-a+dotprod+fp16"]

pytestmark = pytest.mark.skipif(CXX is None or platform.machine() == "aarch64",
                                reason="needs the aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu) on x86")


def _compile(src: Path, out: Path, extra: list[str]) -> Path:
    r = subprocess.run([CXX, *FLAGS, *extra, "-c", str(src), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def test_neon_sources_compile(tmp_path):
    for src in sorted((CSRC / "kernels" / "arm_neon").glob("*.cpp")):
        _compile(src, tmp_path / (src.stem + ".o"), NEON)


@pytest.mark.slow  # compiles every kernel source for aarch64 and runs them under qemu (~12 s)
@pytest.mark.skipif(QEMU is None, reason="needs qemu-user to run aarch64 binaries")
def test_neon_kernels_match_reference_under_qemu(tmp_path):
    baseline = [*sorted((CSRC / "common").glob("*.cpp")), *sorted((CSRC / "model").glob("*.cpp")),
                *sorted((CSRC / "drivers").glob("*.cpp")), *sorted((CSRC / "kernels").glob("*.cpp")),
                *sorted((CSRC / "kernels" / "ref").glob("*.cpp")), ROOT / "tests" / "native" / "isa_check.cpp"]
    objs = [_compile(s, tmp_path / f"b{i}.o", ["-DLLAMIX_HAVE_NEON=1"]) for i, s in enumerate(baseline)]
    objs += [_compile(s, tmp_path / f"n{i}.o", NEON)
             for i, s in enumerate(sorted((CSRC / "kernels" / "arm_neon").glob("*.cpp")))]
    exe = tmp_path / "isa_check"
    subprocess.run([CXX, "-static", "-pthread", *map(str, objs), "-o", str(exe)], check=True, capture_output=True)
    r = subprocess.run([QEMU, str(exe), "neon"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
