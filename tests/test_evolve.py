"""``llamix evolve``'s pieces without Ray: the candidate merged and quantized in memory, the
multiple-choice scoring, the config's checks, the message without the 'evolve' extra.

Oracles: the candidate's logits against the same merge written by ``llamix.merge`` and loaded by
llamix's Hugging Face loader with the same quantization (bit-identical: the same tensors reach the
same quantizer); the task log-likelihoods against transformers' float32 forward pass on
stories260K_hf, with the continuation split written here from lm-eval's rule.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import llamix
from llamix.eval.candidate import merged_model
from llamix.eval.evolve_config import load_evolve_config
from llamix.eval.objective import score_merge, parse_objective
from llamix.eval.tasks import MultipleChoice, load_tasks, score_tasks

from conftest import require_peer
from evolve_problem import W_A, W_B, make_problem, write_tasks

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "tests" / "data" / "stories_eval.txt"


@pytest.fixture(scope="module")
def problem(assets, tmp_path_factory):
    return make_problem(assets, tmp_path_factory.mktemp("evolve_problem"))


def _merge_cfg(problem, wa, wb, method="task_arithmetic"):
    return {"merge_method": method, "base_model": str(problem["base"]),
            "models": [{"model": str(problem["ft_a"]), "parameters": {"weight": wa}},
                       {"model": str(problem["ft_b"]), "parameters": {"weight": wb}}]}


@pytest.mark.parametrize("qtype", ["q8_0", "f32"])
def test_candidate_equals_merge_then_load(problem, tmp_path, qtype):
    cfg = _merge_cfg(problem, 0.3, 0.9)
    m = merged_model(cfg, qtype, n_ctx=64)
    out = llamix.merge(cfg, tmp_path / "merged")
    ref = llamix.load(out, qtype=None if qtype == "f32" else qtype, n_ctx=64)
    ids = ref.tokenizer.encode("Once upon a time, there was a little girl", add_special=True)
    assert np.array_equal(m.logits(ids), ref.logits(ids))


def test_candidate_at_the_known_optimum_is_the_trained_model(problem):
    """base + W_A tau_a + W_B tau_b = theta* (to float32 rounding)."""
    m = merged_model(_merge_cfg(problem, W_A, W_B), "f32", n_ctx=64)
    ref = llamix.load(problem["theta"], n_ctx=64)
    ids = ref.tokenizer.encode("Once upon a time", add_special=True)
    np.testing.assert_allclose(m.logits(ids), ref.logits(ids), rtol=0, atol=2e-4)


def _lm_eval_split(sp, context, continuation, bos):
    """lm-eval's _encode_pair, written from its source's rule (trailing spaces move to the continuation)."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = sp.encode(context + continuation)
    ctx = sp.encode(context)
    return [bos] + ctx, whole[len(ctx):]


def test_task_loglik_matches_transformers(assets, tmp_path):
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    spm = require_peer("sentencepiece")
    folder = assets / "stories260K_hf"
    tasks = load_tasks(write_tasks(tmp_path / "t.jsonl", n=6))
    tasks.append(MultipleChoice("The dog ran to the ", ["park", "moon"], 0))  # trailing space moves over
    model = llamix.load(folder, n_ctx=128)
    r = score_tasks(model, tasks)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    right = right_norm = 0
    for q, got in zip(tasks, r.loglik):
        want = []
        for c in q.choices:
            ctx, cont = _lm_eval_split(sp, q.context, " " + c, 1)
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                lp = torch.log_softmax(hf(ids).logits[0].double(), -1)
            want.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
        right += int(np.argmax(want)) == q.answer
        right_norm += int(np.argmax(np.array(want) / [len(c) for c in q.choices])) == q.answer
    assert r.acc == right / len(tasks) and r.acc_norm == right_norm / len(tasks)


def test_score_merge_combines_perplexity_and_tasks(problem, tmp_path):
    tasks = write_tasks(tmp_path / "t.jsonl")
    both = parse_objective({"perplexity": str(TEXT), "n_ctx": 64, "tasks": str(tasks)}, tmp_path, lambda p, d: p)
    s = score_merge(_merge_cfg(problem, W_A, W_B), both)
    m = merged_model(_merge_cfg(problem, W_A, W_B), "q8_0", n_ctx=64)
    ppl = llamix.perplexity(m, TEXT.read_text(), n_ctx=64).ppl
    acc = score_tasks(m, load_tasks(tasks)).acc
    assert s.ppl == ppl and s.acc == acc
    assert s.loss == pytest.approx(np.log(ppl) - acc, abs=1e-12)


def _config(problem, tmp_path, **over):
    cfg = {"base_model": str(problem["base"]), "models": [str(problem["ft_a"]), str(problem["ft_b"])],
           "merge_method": "task_arithmetic", "parameters": {"weight": [0.0, 1.0]},
           "objective": {"perplexity": str(TEXT), "n_ctx": 64}, "budget": {"generations": 2, "population": 4},
           "seed": 0}
    cfg.update(over)
    path = tmp_path / "evolve.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_config_search_space_and_candidate_configs(problem, tmp_path):
    cfg = load_evolve_config(_config(problem, tmp_path, merge_method="ties",
                                     parameters={"weight": [0.0, 1.0], "density": [0.1, 1.0], "normalize": True},
                                     models=[str(problem["ft_a"]), {"model": str(problem["ft_b"]),
                                                                    "parameters": {"density": 0.5}}]))
    assert [d.name for d in cfg.dims] == [f"{problem['ft_a']}:weight", f"{problem['ft_b']}:weight",
                                          f"{problem['ft_a']}:density"]
    mc = cfg.merge_config(cfg.values([0.0, 1.0, 1.0]))
    assert mc["parameters"] == {"normalize": True}
    assert mc["models"][0]["parameters"] == {"weight": 0.0, "density": 1.0}
    assert mc["models"][1]["parameters"] == {"density": 0.5, "weight": 1.0}
    grouped = load_evolve_config(_config(problem, tmp_path, layer_groups=2))
    assert grouped.layer_groups == [(0, 2), (2, 5)] and len(grouped.dims) == 4
    mc = grouped.merge_config(grouped.values([0.1, 0.2, 0.3, 0.4]))
    assert [s["sources"][0]["layer_range"] for s in mc["slices"]] == [[0, 2], [2, 5]]
    assert mc["slices"][1]["sources"][0]["parameters"] == {"weight": 0.2}
    assert mc["slices"][1]["sources"][2] == {"model": str(problem["base"]), "layer_range": [2, 5]}
    # the candidate of a grouped search merges as that slices config says (llamix merge's own checks)
    llamix.merge_to_gguf(mc, tmp_path / "g.gguf", "f32")


@pytest.mark.parametrize("over, field", [
    ({"merge_method": "nope"}, "merge_method"),
    ({"parameters": {"wieght": [0, 1]}}, "parameters.wieght"),
    ({"parameters": {"weight": [1.0, 0.5]}}, "parameters.weight"),
    ({"parameters": {"weight": 0.5}}, "parameters"),
    ({"parameters": {"weight": [0.0, 1.0], "density": [0.0, 2.0]}}, "parameters.density"),
    ({"parameters": {"weight": [0.0, 1.0], "lambda": [0.5, 1.5]}, "models": [{"model": "x", "parameters": {"lambda": 1}}]},
     "models[0].parameters.lambda"),
    ({"objective": {"perplexity": "missing.txt"}}, "objective.perplexity"),
    ({"objective": {"n_ctx": 64}}, "objective"),
    ({"objective": {"perplexity": str(TEXT), "qtype": "q3_k"}}, "objective.qtype"),
    ({"objective": {"perplexity": str(TEXT), "metric": "f1"}}, "objective.metric"),
    ({"budget": {"generations": 0, "population": 4}}, "budget.generations"),
    ({"budget": {"generations": 2, "population": 1}}, "budget.population"),
    ({"layer_groups": 9}, "layer_groups"),
    ({"seed": "x"}, "seed"),
    ({"models": []}, "models"),
    ({"extra": 1}, "extra"),
])
def test_config_errors_name_file_and_field(problem, tmp_path, over, field):
    path = _config(problem, tmp_path, **over)
    with pytest.raises(llamix.ConfigError) as e:
        load_evolve_config(path)
    assert str(e.value).startswith(f"{path}: {field}")


def test_task_file_errors_name_line_and_field(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"context": "a", "choices": ["x", "y"], "answer": 0}) + "\n" +
                 json.dumps({"context": "b", "choices": ["x", "y"], "answer": 2}) + "\n")
    with pytest.raises(llamix.ConfigError, match=r"t.jsonl:2: answer"):
        load_tasks(p)


def test_merge_errors_are_found_before_any_work(problem, tmp_path):
    """A config whose merges cannot run fails with the merge's own message before Ray starts."""
    require_peer("ray", "evolve")
    require_peer("cmaes", "evolve")
    path = _config(problem, tmp_path, base_model=None, merge_method="task_arithmetic")
    with pytest.raises(llamix.ConfigError, match="base_model"):
        llamix.evolve(path, tmp_path / "run")


def test_without_the_extra_the_cli_says_how_to_install(problem, tmp_path):
    path = _config(problem, tmp_path)
    code = ("import sys; sys.modules['ray'] = None; from llamix.cli import main; "
            f"sys.exit(main(['evolve', {str(path)!r}, {str(tmp_path / 'run')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    assert "pip install 'llamix[evolve]'" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("llamix evolve: error:")


@pytest.mark.parametrize("argv, msg", [
    (["evolve", "cfg.yml"], "expected CONFIG.yml OUT_DIR"),
    (["evolve", "cfg.yml", "out", "--workers", "0"], "--workers must be >= 1"),
    (["soup", "o.gguf", "--candidates", "a", "--eval", "t.txt", "--workers", "2"], "--workers/--ray-address need --ray"),
])
def test_cli_usage_errors(argv, msg, capsys, tmp_path, monkeypatch):
    from llamix.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("hello")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_resume_with_another_config_names_the_fields(problem, tmp_path):
    require_peer("ray", "evolve")
    require_peer("cmaes", "evolve")
    run = tmp_path / "run"
    run.mkdir()
    first = load_evolve_config(_config(problem, tmp_path))
    (run / "evolve.yml").write_text(yaml.safe_dump(first.data))
    (run / "state.json").write_text("{}")
    other = _config(problem, tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path,
                    budget={"generations": 3, "population": 4})
    with pytest.raises(llamix.ArgumentError, match=r"differs from the run in .*\(budget\)"):
        llamix.evolve(other, run, resume=True)
    with pytest.raises(llamix.ArgumentError, match="exists and is not an empty folder"):
        llamix.evolve(other, run)


def test_saved_config_keeps_names_and_resolves_from_anywhere(problem, tmp_path, monkeypatch):
    """A run's evolve.yml (paths made absolute) gives the same search as the config it came from,
    with the models' names as written, from any folder."""
    work = tmp_path / "w"
    work.mkdir()
    for k in ("base", "ft_a", "ft_b"):
        (work / k).symlink_to(problem[k])
    (work / "held.txt").write_text(TEXT.read_text())
    monkeypatch.chdir(work)
    cfg = load_evolve_config({"base_model": "base", "models": ["ft_a", {"model": "ft_b", "name": "b"}],
                              "merge_method": "task_arithmetic", "parameters": {"weight": [0.0, 1.0]},
                              "objective": {"perplexity": "held.txt"}, "budget": {"generations": 1, "population": 2}})
    assert [d.name for d in cfg.dims] == ["ft_a:weight", "b:weight"]
    saved = tmp_path / "saved.yml"
    saved.write_text(yaml.safe_dump(cfg.data, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    again = load_evolve_config(saved)
    assert [d.name for d in again.dims] == ["ft_a:weight", "b:weight"]
    assert again.fingerprint() == cfg.fingerprint() and again.models == cfg.models
    assert Path(again.objective.perplexity).is_absolute()
