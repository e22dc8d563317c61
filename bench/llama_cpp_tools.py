"""llama.cpp's command-line tools (llama-bench, llama-server, llama-quantize, llama-perplexity,
llama-imatrix) built from the llama.cpp sources that llama-cpp-python's sdist vendors, so the
benches compare llamix with the same llama.cpp the parity tests use.

    python bench/llama_cpp_tools.py            # build once (about 15-30 min on 2 cores), print the bin folder
    from llama_cpp_tools import tool; tool("llama-bench")   # path, or None when not built

The build goes to $LLAMIX_LLAMA_CPP_TOOLS (default ~/.cache/llamix-llama-cpp/<version>). It is
llama.cpp's best CPU build that runs in these VMs: every x86 extension the CPU reports except AMX,
whose path segfaults here (GGML_NATIVE would switch it on); weight repacking stays on.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"   # the llama-cpp-python pinned by the 'peers' extra
TOOLS = ("llama-bench", "llama-server", "llama-quantize", "llama-perplexity", "llama-imatrix")


def tools_dir() -> Path:
    root = os.environ.get("LLAMIX_LLAMA_CPP_TOOLS")
    return Path(root) if root else Path.home() / ".cache" / "llamix-llama-cpp" / VERSION


def tool(name: str) -> Path | None:
    """The built tool's path, or None when it has not been built."""
    path = tools_dir() / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _isa_options() -> list[str]:
    if platform.machine() not in ("x86_64", "AMD64"):
        return ["-DGGML_NATIVE=ON"]
    flags = _cpu_flags()
    wanted = {"GGML_AVX": "avx", "GGML_AVX2": "avx2", "GGML_FMA": "fma", "GGML_F16C": "f16c",
              "GGML_BMI2": "bmi2", "GGML_AVX_VNNI": "avx_vnni", "GGML_AVX512": "avx512f",
              "GGML_AVX512_VBMI": "avx512vbmi", "GGML_AVX512_VNNI": "avx512_vnni", "GGML_AVX512_BF16": "avx512_bf16"}
    return ["-DGGML_NATIVE=OFF"] + [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for opt, flag in wanted.items()]


def build(jobs: int | None = None) -> Path:
    """Download llama-cpp-python's sdist (pip), build the tools, return the bin folder."""
    out = tools_dir()
    if all(tool(t) for t in TOOLS):
        return out / "bin"
    with tempfile.TemporaryDirectory() as tmp:
        # only llama-cpp-python as its sdist: ":all:" would also build its build requirements
        # from source (measured: over 15 minutes before the download finished)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps",
                        f"llama-cpp-python=={VERSION}", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        build_dir = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", *_isa_options()], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 1),
                        "--target", *TOOLS], check=True)
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for name in TOOLS:
            shutil.copy2(build_dir / "bin" / name, out / "bin" / name)
    return out / "bin"


if __name__ == "__main__":
    print(build())
