"""The Python layers hold: import-linter's layers contract (pyproject.toml) over the installed
package, and no module reaches into another's private names."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import llamix

PACKAGE = Path(llamix.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[1]


def test_layers_contract():
    pytest.importorskip("importlinter", reason="import-linter is in the 'test' extra")
    lint = Path(sys.executable).parent / "lint-imports"
    cmd = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    r = subprocess.run(cmd + ["--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                       cwd=PACKAGE.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            yield node, [a.name for a in node.names]


def test_no_private_names_across_modules():
    """``from x import _name`` only inside one package's own files (``_C`` and ``_runtime`` are
    the extension and the runtime module, public to the package)."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node, names in _imports(path):
            for name in names:
                if name.startswith("_") and name not in ("_C", "_runtime", "__version__") and node.level != 1:
                    bad.append(f"{path.relative_to(PACKAGE)}: from {'.' * node.level}{node.module or ''} import {name}")
    assert not bad, "\n".join(bad)


def test_no_imports_inside_functions_but_optional_heavy_ones():
    """Imports inside functions hide cycles; the only ones allowed load heavy optional modules late."""
    allowed = {"sentencepiece", "sentencepiece.sentencepiece_model_pb2", "threading", "tokenizers",
               "jinja2", "jinja2.ext", "jinja2.sandbox",  # chat templates (0.1 s to import)
               "tqdm",                                     # progress bars, when one is drawn (0.1 s to import)
               "llguidance",                             # constrained (JSON) decoding
               "huggingface_hub",                          # Hub repo ids in merge configs
               "cmaes", "matplotlib", "matplotlib.figure", "matplotlib.ticker",
               ".evolve_ray"}  # the 'evolve' extra (Ray)
    bad = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] if node.level == 0 else ["." * node.level + (node.module or "")]
                else:
                    continue
                bad += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {n}" for n in names if n not in allowed]
    assert not bad, "\n".join(bad)
