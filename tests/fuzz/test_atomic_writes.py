"""Outputs appear only when complete: a quantize and a merge killed with SIGKILL midway (no chance to
clean up) leave no file or folder under the output's name, only a temporary one beside it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import llamix

import fuzz_formats as ff

ROOT = Path(__file__).resolve().parents[2]
# where the llamix under test lives (site-packages once installed, python/ in a source tree):
# child processes import that one, never the source tree without its compiled extension
LLAMIX_HOME = str(Path(llamix.__file__).resolve().parents[1])

# The child runs the CLI with one step patched to announce "midway" (a marker file) and then wait
# to be killed.
CHILD = """
import sys, time
from pathlib import Path
marker = Path(sys.argv[1])
import llamix
import llamix.export.gguf as export_gguf
import llamix.merge.output as output
import llamix.export.merge_gguf as merge_gguf
seen = {"n": 0}
def midway():
    seen["n"] += 1
    if seen["n"] == 3:
        marker.write_text("midway")
        time.sleep(120)
real_convert, real_write = export_gguf.convert_tensor, output.HFFolderWriter.write
def convert(t, target):
    midway()
    return real_convert(t, target)
def write(self, name, array):
    midway()
    return real_write(self, name, array)
real_target = output.HFFolderWriter.target
def target(self, task):  # the merge kernels write the tensor into the file themselves
    midway()
    return real_target(self, task)
def quantize(*args, **kwargs):
    midway()
    return real_quantize(*args, **kwargs)
real_quantize = merge_gguf.quantize
export_gguf.convert_tensor = convert
merge_gguf.quantize = quantize
output.HFFolderWriter.write = write
output.HFFolderWriter.target = target
from llamix.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _kill_midway(tmp_path: Path, argv: list[str]) -> None:
    marker = tmp_path / "midway"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([LLAMIX_HOME, os.environ.get("PYTHONPATH", "")]),
           "LLAMIX_QUIET": "1"}
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *argv], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert p.poll() is None, f"the child ended before midway: {p.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the child never got midway"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigkill_during_quantize_leaves_no_output(tmp_path):
    src = tmp_path / "src.gguf"
    src.write_bytes(ff.base_gguf())
    out = tmp_path / "out.gguf"
    _kill_midway(tmp_path, ["quantize", str(src), str(out), "q8_0"])
    assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("src.gguf", "midway")]
    assert all(n.startswith("out.gguf.") and n.endswith(".tmp") for n in leftovers), leftovers


def test_sigkill_during_merge_leaves_no_output(tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        for f, raw in ff.hf_folder_files(seed).items():
            (tmp_path / name / f).write_bytes(raw)
        (tmp_path / name / "tokenizer.model").write_bytes(ff.spm_model_bytes(ff.H_VOCAB))
    cfg = tmp_path / "merge.yml"
    cfg.write_text("merge_method: linear\ndtype: float32\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                   "  - model: b\n    parameters: {weight: 1}\n")
    for out in (tmp_path / "out", tmp_path / "out.gguf"):
        (tmp_path / "midway").unlink(missing_ok=True)
        _kill_midway(tmp_path, ["merge", str(cfg), str(out)] +
                     (["--type", "q8_0"] if out.suffix == ".gguf" else ["--shard-size", "2KB"]))
        assert not out.exists()
    # what is left is a temporary folder or file, never one under the output's name or with a config.json
    leftovers = [p for p in tmp_path.iterdir() if p.name not in ("a", "b", "merge.yml", "midway")]
    assert all(".llamix-tmp-" in p.name or p.name.endswith(".tmp") for p in leftovers), leftovers
    assert not any((p / "config.json").exists() for p in leftovers if p.is_dir())
