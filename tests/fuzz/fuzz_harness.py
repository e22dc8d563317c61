"""The fuzz harness: hypothesis draws structured inputs (fuzz_mutators.py), each runs in a child process
with a time and an address-space limit (fuzz_targets.py through tests/child_process.py), and every
outcome is counted: accepted, clear error, unclear error, crash, hang.

An input that ends in anything but acceptance or a clear error is saved to
``tests/fuzz/corpus/<target>/`` (one per kind of fault: the target, the outcome, the exception type
and the innermost llamix frame, or the hung / crashed stack) and replayed by every default test run
(test_fuzz_corpus.py). Entry points: :func:`fuzz` (the ``fuzz`` marker's tests, test_fuzz.py) and
``python tests/fuzz/run.py`` (long local runs, docs/DEVELOPING.md).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed as hseed, settings
from hypothesis.errors import HypothesisWarning

from child_process import Child, ChildCrashed

import fuzz_targets
from fuzz_mutators import STRATEGIES

CORPUS = Path(__file__).resolve().parent / "corpus"
TARGETS = list(STRATEGIES)
OUTCOMES = ("ok", "clear", "named_valueerror", "unclear", "crash", "hang")
GOOD = ("ok", "clear")
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY = 2 << 30  # address space of a child: a tiny model needs a few hundred MB


class Runner:
    """One child process at a time, set up with the limits and restarted after a crash or hang."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, memory: int = DEFAULT_MEMORY):
        self.timeout, self.memory = timeout, memory
        self.child = Child(timeout=timeout + 5)  # the child dumps its stack at `timeout`, then is killed
        self._ready_pid = None

    def close(self) -> None:
        self.child.close(kill=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, target: str, case: dict) -> dict:
        t0 = time.monotonic()
        try:
            if self._ready_pid is None or self.child._proc is None or self.child._proc.pid != self._ready_pid:
                self._ready_pid = self.child.call(fuzz_targets.setup, self.memory, timeout=60)
            result = self.child.call(fuzz_targets.run, target, case, self.timeout)
        except ChildCrashed as e:
            self._ready_pid = None
            msg = str(e)
            outcome = "hang" if "timed out" in msg else "crash"
            result = {"outcome": outcome, "type": outcome, "message": msg.splitlines()[0][:300],
                      "where": _stack_location(msg), "traceback": msg[-3000:]}
        result["seconds"] = round(time.monotonic() - t0, 3)
        return result


_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def _stack_location(log: str) -> str:
    """The innermost llamix frame of a faulthandler dump (the first one listed)."""
    frames = _FRAME.findall(log)
    inner = [f for f in frames if "/llamix/" in f[0]] or frames
    if not inner:
        return "?"
    path, line, func = inner[0]
    return f"{os.path.basename(path)} {func}"


# --- the corpus -----------------------------------------------------------------------------------
def _encode_files(files: dict) -> dict:
    out = {}
    for name, raw in files.items():
        try:
            text = raw.decode("utf-8")
            if len(raw) < 4096 and "\x00" not in text:
                out[name] = {"text": text}
                continue
        except UnicodeDecodeError:
            pass
        out[name] = {"b64z": base64.b64encode(zlib.compress(raw, 9)).decode()}
    return out


def _decode_files(files: dict) -> dict:
    return {name: (e["text"].encode("utf-8") if "text" in e else zlib.decompress(base64.b64decode(e["b64z"])))
            for name, e in files.items()}


def signature(target: str, result: dict) -> str:
    return f"{target}|{result['outcome']}|{result.get('type')}|{result.get('where')}"


def corpus_cases(target: str | None = None) -> list[tuple[str, Path]]:
    """(target, file) of every saved case, in a stable order."""
    out = []
    for d in sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []:
        if d.is_dir() and (target is None or d.name == target):
            out += [(d.name, f) for f in sorted(d.glob("*.json"))]
    return out


def load_case(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {"files": _decode_files(doc["files"]), "args": doc.get("args", {}), "note": doc.get("note", ""),
            "found": doc.get("found", {})}


def known_signatures() -> set[str]:
    sigs = set()
    for target, path in corpus_cases():
        found = json.loads(path.read_text()).get("found", {})
        if found:
            sigs.add(signature(target, found))
    return sigs


def save_case(target: str, case: dict, result: dict) -> Path:
    doc = {"target": target, "note": case.get("note", ""), "args": case.get("args", {}),
           "found": {k: result.get(k) for k in ("outcome", "type", "where", "message")},
           "files": _encode_files(case["files"])}
    body = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True)
    name = hashlib.sha1(json.dumps([doc["files"], doc["args"]], sort_keys=True).encode()).hexdigest()[:16]
    path = CORPUS / target / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body + "\n")
    return path


# --- a run ---------------------------------------------------------------------------------------
@dataclass
class Stats:
    target: str
    counts: Counter = field(default_factory=Counter)
    bad: list = field(default_factory=list)        # (case note, result) of every bad outcome
    saved: list = field(default_factory=list)      # corpus files written
    seconds: float = 0.0

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    @property
    def n_bad(self) -> int:
        return sum(n for k, n in self.counts.items() if k not in GOOD)

    def add(self, case: dict, result: dict) -> None:
        self.counts[result["outcome"]] += 1
        if result["outcome"] not in GOOD:
            self.bad.append((case.get("note", ""), result))

    def report(self, limit: int = 12) -> str:
        lines = [f"{self.target}: {self.tried} inputs, " + ", ".join(f"{k} {self.counts[k]}" for k in OUTCOMES)]
        kinds = Counter((r["outcome"], r.get("type"), r.get("where")) for _, r in self.bad)
        for (outcome, typ, where), n in kinds.most_common(limit):
            note, r = next((n_, r) for n_, r in self.bad if (r["outcome"], r.get("type"), r.get("where")) ==
                           (outcome, typ, where))
            lines.append(f"  {n:5d} x {outcome} {typ} at {where}: {r.get('message', '')[:160]!r}  [{note[:100]}]")
        if self.saved:
            lines.append(f"  saved {len(self.saved)} new cases: " + ", ".join(str(p.relative_to(CORPUS))
                                                                           for p in self.saved))
        return "\n".join(lines)


class _Stop(Exception):
    """The time budget is spent."""


def fuzz(target: str, seconds: float, seed: int = 0, runner: Runner | None = None, save: bool = True,
         max_examples: int = 1_000_000) -> Stats:
    """Draw and run inputs for ``target`` for about ``seconds`` (hypothesis, seeded: the same seed
    draws the same inputs); save each new kind of fault to the corpus."""
    own = runner is None
    runner = runner or Runner()
    stats = Stats(target)
    known = known_signatures() if save else set()
    start = time.monotonic()
    deadline = start + seconds

    @settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False, report_multiple_bugs=False)
    @hseed(seed)
    @given(STRATEGIES[target]())
    def body(case):
        if time.monotonic() > deadline:
            raise _Stop
        result = runner.run(target, case)
        stats.add(case, result)
        sig = signature(target, result)
        if save and result["outcome"] not in GOOD and sig not in known:
            known.add(sig)
            stats.saved.append(save_case(target, case, result))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HypothesisWarning)  # the repr of the last (stopping) input
            body()
    except _Stop:
        pass
    finally:
        stats.seconds = time.monotonic() - start
        if own:
            runner.close()
    return stats


def table(all_stats: list[Stats]) -> str:
    """A markdown table of outcomes per target."""
    head = "| target | inputs | accepted | clear error | unclear error | (of which ValueError naming the file) " \
           "| crash | hang |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in all_stats:
        c = s.counts
        unclear = c["unclear"] + c["named_valueerror"]
        lines.append(f"| {s.target} | {s.tried} | {c['ok']} | {c['clear']} | {unclear} | {c['named_valueerror']} "
                     f"| {c['crash']} | {c['hang']} |")
    return "\n".join(lines)
