"""Build hygiene: the kernel tests under AddressSanitizer + UndefinedBehaviorSanitizer, and no AVX
instructions in baseline code (one build must run on any x86-64 CPU).

The sanitizer build (-DLLAMIX_SANITIZE=ON, Debug at -O1) goes to build/sanitize (kept between runs
so ninja rebuilds only what changed); its _C is placed next to a copy of python/llamix and the
kernel tests run in a subprocess with libasan preloaded (python itself is not instrumented).

Marked `sanitize`: not in the default run (the build takes minutes on 2 cores); .ci/run runs it
as its own step on every CI run (python -m pytest -m sanitize tests/test_sanitizers.py).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import skip_or_fail as _skip_or_fail

pytestmark = pytest.mark.sanitize
ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "sanitize"
KERNEL_TESTS = ["test_quant_formats.py", "test_matmul.py", "test_kquant.py", "test_thread_pool.py", "test_ops.py",
                "test_merge_kernels_more.py", "test_attention_tiled.py"]
KERNEL_TESTS += ["test_lowbit_quants.py"]  # Q4_1 / IQ4_NL / Q2_K / Q3_K / IQ4_XS dequantization and dots
KERNEL_TESTS += ["test_quant_lowbit.py"]  # the low-bit quantizers
KERNEL_TESTS += ["test_attention_amx.py"]  # bf16 attention products: AMX tiles and their emulations (~96 s)


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not path:
        _skip_or_fail(f"{name} not found (pip install cmake ninja)")
    return path


@pytest.fixture(scope="module")
def sanitize_build() -> Path:
    if sys.platform != "linux":
        pytest.skip("sanitizer build is tested on Linux")
    cmake, ninja = _tool("cmake"), _tool("ninja")
    pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    if not (BUILD / "build.ninja").exists():
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(BUILD), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                        "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g", "-DLLAMIX_SANITIZE=ON",
                        f"-Dpybind11_DIR={pybind11_dir}", f"-DPython_EXECUTABLE={sys.executable}"],
                       check=True, capture_output=True, text=True)
    r = subprocess.run([cmake, "--build", str(BUILD)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return BUILD


def _runtime_lib(name: str) -> str:
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        _skip_or_fail(f"{name} not found via g++ -print-file-name")
    return path


def test_kernel_tests_pass_under_asan_and_ubsan(sanitize_build, tmp_path):
    built = sorted(sanitize_build.glob("csrc/_C*.so"))
    assert built, "the sanitizer build produced no _C module"
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "python" / "llamix", pkg / "llamix", ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    shutil.copy2(built[0], pkg / "llamix" / built[0].name)

    # This interpreter's import path behind the sanitized copy, which therefore shadows an installed
    # llamix (an editable install's finder is a .pth hook, which -S skips).
    paths = [p for p in sys.path if p and Path(p).exists()]
    tests = [ROOT / "tests" / t for t in KERNEL_TESTS] + sorted((ROOT / "tests").glob("test_*kernel*.py"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMIX_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(pkg), str(ROOT / "tests")] + paths),
        # libstdc++ too: python does not load it, and ASan's __cxa_throw interceptor needs it at start
        "LD_PRELOAD": os.pathsep.join([_runtime_lib("libasan.so"), _runtime_lib("libstdc++.so")]),
        # reports go to files: pytest captures fd 2, and a process that dies mid-test loses it
        "ASAN_OPTIONS": f"detect_leaks=0:halt_on_error=1:log_path={tmp_path}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={tmp_path}/ubsan",
    })
    probe = subprocess.run([sys.executable, "-S", "-c", "import llamix._C as c; print(c.__file__)"],
                           env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-4000:]
    assert probe.stdout.strip().startswith(str(pkg)), probe.stdout
    # -m "": every test of those files, `slow` ones too (the default run's addopts leave them out)
    r = subprocess.run([sys.executable, "-S", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        "-p", "no:randomly", "-m", "", *map(str, tests)],
                       env=env, capture_output=True, text=True, cwd=tmp_path)
    logs = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*san*")) if p.is_file())
    report = logs[-8000:] + r.stdout[-4000:] + r.stderr[-4000:]
    assert not logs, report
    assert r.returncode == 0, report


# ---- no AVX outside the ISA folders -------------------------------------------------------------

WIDE_REGISTER = re.compile(r"%[yz]mm\d+")


def _objdump(path: Path) -> str:
    objdump = shutil.which("objdump")
    if not objdump:
        _skip_or_fail("objdump not found (binutils)")
    return subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", str(path)], capture_output=True,
                          text=True, check=True).stdout


def test_baseline_objects_have_no_avx(sanitize_build):
    objects = [p for p in sanitize_build.rglob("*.o") if not re.search(r"llamix_(avx2|avx512|neon)\.dir", str(p))]
    assert len(objects) >= 10, objects
    offenders = {p.name: WIDE_REGISTER.findall(_objdump(p))[:3] for p in objects}
    assert not {k: v for k, v in offenders.items() if v}


def test_linked_module_uses_avx_only_in_isa_functions():
    """The linker may pick any copy of an inline function; a copy compiled with AVX flags would
    crash baseline callers on an old CPU. Every function of the installed module that touches a
    ymm/zmm register must belong to an ISA's namespace (or be its fill_* entry)."""
    from llamix import _C

    text = _objdump(Path(_C.__file__))
    bad = []
    for block in text.split("\n\n"):
        m = re.match(r"[0-9a-f]+ <(.*)>:", block.strip())
        if m and WIDE_REGISTER.search(block) and not re.search(r"avx2|avx512", m.group(1)):
            bad.append(m.group(1))
    assert not bad, bad[:10]
