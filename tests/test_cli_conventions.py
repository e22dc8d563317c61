"""The command line speaks llama.cpp's conventions: -t/-c/-n/-p/-f everywhere they apply, type
names in any case, --version, defaults in --help, errors naming the flag on a line of their own,
and quiet endings for Ctrl-C, SIGTERM (no temporary file left) and a closed pipe."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import llamix
from llamix.cli import main
from llamix.model import Model


@pytest.fixture(scope="module")
def s260(assets):
    return str(assets / "stories260K" / "stories260K.bin")


def test_version_and_help_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"llamix {llamix.__version__}"
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    for flag in ("-t N, --threads N", "-c N, --ctx-size N", "-n N, --n-predict N", "-p PROMPT, --prompt PROMPT",
                 "-f FILE, --file FILE", "--temp TEMP"):
        assert flag in out, flag
    assert "(default: 128)" in out and "(default: 0.8)" in out


def test_top_level_help_imports_no_command():
    """`llamix --help` lists every command without importing any command's module (each imports
    its stack: the server, the model, the merge; ~0.5 s for all of them)."""
    code = ("import json, sys\nfrom llamix.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('llamix.commands.', 'llamix.server', 'uvicorn')))))")
    here = os.path.dirname(os.path.dirname(os.path.abspath(llamix.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "merge" in r.stdout and "imatrix" in r.stdout      # every command listed
    assert r.stdout.strip().splitlines()[-1] in ('["llamix.commands.common"]', "[]")


def test_prompt_from_flag_file_and_stdin(s260, tmp_path, capsys, monkeypatch):
    want = "Once upon a time, there was a little girl named Lily. She\n"
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0"]) == 0
    assert capsys.readouterr().out == want
    f = tmp_path / "prompt.txt"
    f.write_text("Once upon a time")
    assert main(["generate", "-m", s260, "-f", str(f), "-n", "12", "--temp", "0", "-t", "1", "-c", "64"]) == 0
    assert capsys.readouterr().out == want
    monkeypatch.setattr(sys, "stdin", open(f, encoding="utf-8"))
    assert main(["generate", "-m", s260, "-f", "-", "-n", "12", "--temp", "0"]) == 0
    assert capsys.readouterr().out == want


@pytest.mark.parametrize("flags", [["-ngl", "99"], ["--n-gpu-layers", "0"], ["-fa"], ["-fa", "on"],
                                   ["-ngl", "99", "-fa", "auto"], ["-nkvo"], ["-nkvo", "1"]])
def test_llama_cpp_gpu_flags_are_accepted_with_a_warning(s260, capsys, flags):
    """-ngl and -fa, typed from llama.cpp habit: llama.cpp's CPU-only builds run with a warning;
    argparse read -ngl 99 as "-n gl" (invalid int value: 'gl') and -fa as "-f a" (the prompt
    given twice)."""
    want = "Once upon a time, there was a little girl named Lily. She\n"
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0", *flags]) == 0
    out, err = capsys.readouterr()
    assert out == want
    for flag in flags:
        if flag.startswith("-"):
            assert f"llamix generate: warning: {flag} has no effect: llamix runs on the CPU" in err
    assert main(["bench", "-m", s260, "-p", "8", "-n", "2", "-r", "1", *flags]) == 0
    assert "has no effect" in capsys.readouterr().err


def test_escapes_in_prompt_and_stop_as_llama_cpp(s260, capsys):
    """llama.cpp processes escapes in -p and the stop strings unless --no-escape (its -e is on by
    default): -p 'Once upon\\na time' is a two-line prompt; -f files are read as they are."""
    assert main(["generate", "-m", s260, "-p", r"Once upon\na time", "-n", "1", "--temp", "0"]) == 0
    assert capsys.readouterr().out.startswith("Once upon\na time")
    assert main(["generate", "-m", s260, "-p", r"Once upon\na time", "-n", "1", "--temp", "0", "--no-escape"]) == 0
    assert capsys.readouterr().out.startswith(r"Once upon\na time")
    # greedy: "Once upon a time, there was a little girl named Lily." -- a stop at the ", " after time
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0", "--stop", r",\x20"]) == 0
    assert capsys.readouterr().out == "Once upon a time\n"
    assert main(["generate", "-m", s260, "-p", r"Once \xff", "-n", "1"]) == 1
    assert "-p/--prompt" in capsys.readouterr().err
    from llamix.commands.model_inputs import process_escapes
    assert process_escapes(r"a\tb\\n\'\"\x41\q\xZZ\\") == "a\tb\\n'\"A\\q\\xZZ\\"
    assert process_escapes(r"caf\xc3\xa9 \n") == "café \n"


def test_n_predict_minus_one_fills_the_context(s260, capsys):
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "-1", "-c", "12", "--temp", "0",
                 "--stop", "\x00never"]) == 0
    m = llamix.load(s260, n_ctx=12)
    assert len(m.generate_tokens("Once upon a time", max_tokens=-1, temperature=0)) == 12 - 5
    assert capsys.readouterr().out.startswith("Once upon a time")


def test_n_predict_past_the_context_stops_at_its_end_with_a_warning(s260, capsys):
    """-n beyond the context generates until the context is full, as llama.cpp without context
    shift does (it was refused before generating anything)."""
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "600", "-c", "16", "--temp", "0",
                 "--stats"]) == 0
    out, err = capsys.readouterr()
    assert "go past the context (-c/--ctx-size 16)" in err and out.startswith("Once upon a time")
    n_prompt = int(err.split("prompt eval time")[1].split("/")[1].split()[0])
    assert f"/ {16 - n_prompt - 1:5d} runs" in err   # the last token sampled fills the context, never run


def test_stats_print_prompt_and_generation_speed(s260, capsys):
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "8", "--temp", "0", "--stats"]) == 0
    err = capsys.readouterr().err
    assert "prompt eval time" in err and "5 tokens" in err and "tokens per second" in err
    assert "eval time" in err and "7 runs" in err


@pytest.mark.parametrize("argv, flag", [
    (["generate", "-p", "hi", "-n", "-2"], "-n/--n-predict"),
    (["generate", "-p", "hi", "-t", "100000"], "-t/--threads"),
    (["generate", "-p", "hi", "--top-p", "1.5"], "--top-p"),
    (["generate", "-p", "hi " * 20, "-n", "4", "-c", "16"], "-c/--ctx-size"),
    (["generate"], "-p/--prompt"),
    (["generate", "-p", "hi", "-s", "-2"], "-s/--seed"),
    (["generate", "-p", "hi", "--repeat-last-n", "-2"], "--repeat-last-n"),
    (["generate", "-p", "hi", "--temp", "nan"], "--temp"),
])
def test_errors_name_the_flag_on_their_own_line(s260, argv, flag, capsys):
    argv = argv[:1] + ["-m", s260] + argv[1:]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("llamix generate: error: ") and flag in err and err.count("\n") == 1


def test_negative_temp_is_greedy_and_negative_top_k_off_as_in_llama_cpp(s260, capsys):
    """llama.cpp samples greedily at a temperature <= 0 and turns top-k off at <= 0."""
    texts = []
    for flags in (["--temp", "0"], ["--temp", "-1"], ["--temp", "-0.5", "--top-k", "-1"]):
        assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "-t", "1", *flags]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] == texts[2] and texts[0].startswith("Once upon a time")
    args = []
    for k in ("-1", "0"):  # top-k off: sampling with a seed gives the same text either way
        assert main(["generate", "-m", s260, "-p", "Once", "-n", "12", "-t", "1", "-s", "3", "--top-k", k]) == 0
        args.append(capsys.readouterr().out)
    assert args[0] == args[1]


def test_seed_minus_one_is_random_as_in_llama_cpp(s260, capsys):
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "4", "-s", "-1", "-t", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time") and err == ""


@pytest.mark.parametrize("flag, kw", [("--frequency-penalty", "frequency_penalty"),
                                      ("--presence-penalty", "presence_penalty")])
def test_frequency_and_presence_penalty_flags(s260, capsys, flag, kw):
    """llama-cli's --frequency-penalty / --presence-penalty (were missing): the greedy text is the
    API's with the same penalty under llama.cpp's sampling (the prompt counted), and differs from
    the unpenalized one."""
    prompt = "Once upon a time"
    assert main(["generate", "-m", s260, "-p", prompt, "-n", "40", "--temp", "0", flag, "1.5", "-t", "1"]) == 0
    out = capsys.readouterr().out
    m = llamix.load(s260)
    want = m.create_completion(prompt, max_tokens=40, temperature=0, llama_cpp_sampling=True,
                               **{kw: 1.5})["choices"][0]["text"]
    plain = m.create_completion(prompt, max_tokens=40, temperature=0)["choices"][0]["text"]
    assert want != plain and out == prompt + want + "\n"
    assert main(["generate", "-m", s260, "-p", prompt, "-n", "4", flag, "nan"]) == 1
    assert flag in capsys.readouterr().err


def test_repeat_last_n_flag(s260, capsys):
    """llama-cli's --repeat-last-n (was fixed at 64): the penalties' window, as the API's
    repeat_last_n; a window of 2 lets earlier words repeat where 64 does not."""
    prompt = "Once upon a time"
    outs = {}
    for n in ("2", "64", "-1"):
        assert main(["generate", "-m", s260, "-p", prompt, "-n", "40", "--temp", "0", "--repeat-penalty", "1.8",
                     "--repeat-last-n", n, "-t", "1"]) == 0
        outs[n] = capsys.readouterr().out
    m = llamix.load(s260)
    for n, out in outs.items():
        want = m.create_completion(prompt, max_tokens=40, temperature=0, repeat_penalty=1.8, repeat_last_n=int(n),
                                   llama_cpp_sampling=True)
        assert out == prompt + want["choices"][0]["text"] + "\n", n
    assert outs["2"] != outs["64"]


def test_bad_environment_is_said_before_any_output(s260, capsys, monkeypatch):
    """LLAMIX_THREADS=abc was reported after the prompt had been printed (the kernels read it at
    their first use); LLAMIX_QUIET=0 turned the progress bars off."""
    from llamix.commands.common import quiet_requested
    # the kernels read LLAMIX_THREADS once per process: a fresh one
    r = subprocess.run([sys.executable, "-m", "llamix", "generate", "-m", s260, "-p", "Once upon a time", "-n", "2"],
                       capture_output=True, text=True, env={**os.environ, "LLAMIX_THREADS": "abc"}, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("llamix generate: error: LLAMIX_THREADS=abc") and r.stderr.count("\n") == 1
    for value, quiet in (("0", False), ("", False), ("1", True), ("true", True)):
        monkeypatch.setenv("LLAMIX_QUIET", value)
        assert quiet_requested() is quiet, value
    monkeypatch.setenv("LLAMIX_QUIET", "sometimes")
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "2"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "llamix generate: error: LLAMIX_QUIET=sometimes: expected 1 (no progress bars) or 0\n"


def _raise_on_fourth_eval(monkeypatch, exc: BaseException) -> None:
    calls, real = {"n": 0}, Model.eval

    def eval_then_raise(self, tokens, all_logits=False):
        calls["n"] += 1
        if calls["n"] == 4:
            raise exc
        return real(self, tokens, all_logits)
    monkeypatch.setattr(Model, "eval", eval_then_raise)


def test_error_during_generation_starts_on_a_new_line(s260, capsys, monkeypatch):
    _raise_on_fourth_eval(monkeypatch, ValueError("simulated failure"))
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time,") and out.endswith("\n")
    assert err == "llamix generate: error: simulated failure\n"


def test_ctrl_c_in_generate_keeps_the_text_and_exits_130(s260, capsys, monkeypatch):
    _raise_on_fourth_eval(monkeypatch, KeyboardInterrupt())
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0"]) == 130
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time, there") and out.endswith("\n") and "Traceback" not in err


def test_type_names_in_any_case(s260, tmp_path, capsys):
    assert main(["quantize", s260, str(tmp_path / "a.gguf"), "--type", "Q4_K_M", "-t", "1"]) == 0
    assert main(["quantize", s260, str(tmp_path / "b.gguf"), "q4_k_m"]) == 0
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert llamix.export_gguf(s260, tmp_path / "c.gguf", "Q8_0").file_type == "q8_0"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["quantize", s260, str(tmp_path / "d.gguf"), "--type", "Q9_9"])
    assert e.value.code == 2 and "Q9_9" in capsys.readouterr().err


def test_file_outputs_need_an_existing_folder(s260, tmp_path, capsys):
    """quantize and imatrix write a file into a folder that exists, as llama-quantize and
    llama-imatrix do; a mistyped folder is an error naming it, not created."""
    missing = tmp_path / "no" / "such"
    assert main(["quantize", s260, str(missing / "out.gguf"), "q8_0"]) == 1
    assert f"the folder {missing} does not exist" in capsys.readouterr().err
    text = tmp_path / "calib.txt"
    text.write_text("Once upon a time there was a cat. " * 20)
    assert main(["imatrix", "-m", s260, "-f", str(text), "-o", str(missing / "im.gguf"), "-c", "32"]) == 1
    assert f"the folder {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    (tmp_path / "folder").mkdir()    # a folder OUT: named as such, not "pass --force" (which then failed)
    for force in ([], ["--force"]):
        assert main(["quantize", s260, str(tmp_path / "folder"), "q8_0", *force]) == 1
        assert "is a folder; give the output file's path" in capsys.readouterr().err


def test_sigterm_during_quantize_leaves_no_file(s260, tmp_path, monkeypatch, capsys):
    import llamix.export.gguf as export_gguf_module
    real = export_gguf_module.convert_tensor
    seen = {"n": 0}

    def convert_then_terminate(t, target):
        seen["n"] += 1
        if seen["n"] == 5:  # mid-file: the temporary file exists now
            assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            os.kill(os.getpid(), signal.SIGTERM)
        return real(t, target)
    monkeypatch.setattr(export_gguf_module, "convert_tensor", convert_then_terminate)
    assert main(["quantize", s260, str(tmp_path / "out.gguf"), "q8_0"]) == 143   # 128 + SIGTERM
    assert list(tmp_path.iterdir()) == [] and "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI's handler is gone again


def test_closed_pipe_exits_quietly(s260):
    p = subprocess.Popen([sys.executable, "-m", "llamix", "generate", "-m", s260, "-p", "Once upon a time",
                          "-n", "400", "-c", "512", "--temp", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(5)
    p.stdout.close()  # as `| head -c 5` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == ""


def test_sigterm_during_merge_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import yaml

    from helpers import perturbed, tiny_tensors, write_model
    from llamix.merge.output import HFFolderWriter

    base = tiny_tensors(0)
    paths = [write_model(tmp_path / f"m{i}", perturbed(base, i)) for i in range(2)]
    cfg = tmp_path / "merge.yml"
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32",
                                   "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in paths]}))
    real, real_target, seen = HFFolderWriter.write, HFFolderWriter.target, {"n": 0}

    def terminate_at_third():
        seen["n"] += 1
        if seen["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    def write_then_terminate(self, name, array):  # runs on the writer thread; the handler on the main one
        terminate_at_third()
        return real(self, name, array)

    def target_then_terminate(self, task):  # linear's kernels write the tensors into the file themselves
        terminate_at_third()
        return real_target(self, task)
    monkeypatch.setattr(HFFolderWriter, "write", write_then_terminate)
    monkeypatch.setattr(HFFolderWriter, "target", target_then_terminate)
    before = set(tmp_path.iterdir())
    assert main(["merge", str(cfg), str(tmp_path / "out"), "-t", "1", "-q"]) == 143
    assert set(tmp_path.iterdir()) == before and "terminated" in capsys.readouterr().err


def test_a_killed_merge_leaves_nothing_for_the_next_one(tmp_path, capsys):
    """A merge killed with SIGKILL (or by the OOM killer) runs no handler and leaves its hidden
    temporary folder; the next merge to the same OUT removes it, and leaves a live process's."""
    import subprocess
    import sys

    import yaml

    from helpers import perturbed, tiny_tensors, write_model

    base = tiny_tensors(0)
    paths = [write_model(tmp_path / f"m{i}", perturbed(base, i)) for i in range(2)]
    cfg = tmp_path / "merge.yml"
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32",
                                   "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in paths]}))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".out.llamix-tmp-{gone.pid}"
    live = tmp_path / f".out.llamix-tmp-{os.getppid()}"
    other = tmp_path / f".other.llamix-tmp-{gone.pid}"   # another output's: not this merge's business
    for d in (dead, live, other):
        d.mkdir()
        (d / "model-00001-of-00001.safetensors").write_bytes(b"partial")
    assert main(["merge", str(cfg), str(tmp_path / "out"), "-t", "1", "-q"]) == 0
    assert not dead.exists() and live.exists() and other.exists() and (tmp_path / "out" / "config.json").exists()


def test_qtype_on_a_quantized_file_says_it_kept_the_weights(s260_bin, tmp_path, capsys):
    """--qtype converts float weights only; on a file quantized already it said nothing."""
    from llamix.export import export_gguf
    q4 = tmp_path / "s260-q4_0.gguf"
    export_gguf(s260_bin, q4, "q4_0", pure=True)
    assert main(["generate", "-m", str(q4), "--qtype", "q8_0", "-p", "Once", "-n", "2", "--temp", "0"]) == 0
    err = capsys.readouterr().err
    assert "--qtype q8_0 converts float weights only" in err and "are Q4_0 already" in err
    assert main(["generate", "-m", str(q4), "--qtype", "q4_0", "-p", "Once", "-n", "2", "--temp", "0"]) == 0
    assert "warning" not in capsys.readouterr().err      # nothing to convert, nothing to say


def test_ctrl_c_while_a_command_imports_its_stack_is_one_line(monkeypatch, capsys):
    """Ctrl-C during the command's imports (numpy, the kernels, the server: the slow part of a
    start) ends with exit code 130 and one line, as during its work (was a traceback)."""
    import importlib

    def interrupted(name, *a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert main(["generate", "-m", "x.gguf"]) == 130
    assert capsys.readouterr().err == "llamix: interrupted\n"


def test_a_context_larger_than_memory_is_refused_naming_n_ctx(s260, capsys):
    """-c 10^11 ended in a traceback (MemoryError: std::bad_alloc) and a context that fits in the
    address space but not in memory would be committed page by page until the process is killed:
    both are refused before anything is allocated, naming the flag and the bytes needed."""
    with pytest.raises(llamix.ArgumentError, match=r"n_ctx 100000000000: the KV cache needs [\d.]+ GB"):
        llamix.load(s260, n_ctx=10**11)
    assert main(["generate", "-m", s260, "-p", "Once", "-n", "2", "-c", str(10**11)]) == 1
    err = capsys.readouterr().err
    assert "error: -c 100000000000: the KV cache needs" in err and "-ctk" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, said", [
    (["generate", "-m", "x.gguf", "-hf", "org/model"], "unknown option -hf: llamix reads local files"),
    (["generate", "-m", "x.gguf", "-md", "draft.gguf", "-p", "hi"], "unknown option -md: llamix has no speculative"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-sys", "be brief"], "unknown option -sys: a system prompt needs a "
                                                                  "conversation: llamix chat -sys TEXT"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-cnv"], "unknown option -cnv: llamix chat holds the conversation"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-sp"], "unknown option -sp"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-tb", "2"], "unknown option -tb: llamix uses -t/--threads"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-co"], "unknown option -co"),
    (["generate", "-m", "x.gguf", "-p", "hi", "-ngll", "9"], "unknown option -ngll: did you mean -ngl?"),
    (["chat", "-m", "x.gguf", "-hf", "org/model"], "unknown option -hf"),
    (["serve", "-m", "x.gguf", "-nocb"], "unknown option -nocb: llamix serve always batches continuously"),
    (["quantize", "-hf", "org/model", "out.gguf", "q4_0"], "unknown option -hf"),
    (["generate", "-m", "x.gguf", "-p", "hi", "--chat-template", "chatml"],
     "--chat-template (chat templates apply in llamix chat and llamix serve"),
])
def test_llama_cpp_multi_letter_short_flags_are_unknown_options_by_their_name(argv, said, capsys):
    """argparse read llama.cpp's -hf as -h (help, exit 0), -md as -m d, -cb as -c b, -sys as -s ys:
    now a flag the command does not have is a usage error naming it whole, with what llamix has
    instead."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1].startswith(f"llamix {argv[0]}: error: ")
    assert said in err.splitlines()[-1], err


def test_llama_cpp_flags_accepted(s260, capsys):
    """llama-cli's -r/--reverse-prompt is --stop; -b, --no-mmap, --mlock are accepted (no effect);
    a number attached to a one-letter flag (-t1 -c64) is still argparse's value;
    -t 0 is one thread per physical core (the help says so); serve takes -cb (it always batches
    continuously)."""
    base = ["generate", "-m", s260, "-p", "Once upon a time", "-n", "12", "--temp", "0"]
    assert main([*base, "--stop", "girl"]) == 0
    want = capsys.readouterr().out
    assert want == "Once upon a time, there was a little \n"
    for flags in (["-r", "girl"], ["--reverse-prompt", "girl"], ["--stop", "girl", "-b", "64", "--no-mmap", "--mlock",
                                                                 "-t", "0"], ["-r", "girl", "-t1", "-c64"]):
        assert main([*base, *flags]) == 0, flags
        assert capsys.readouterr().out == want
    from llamix.cli import build_parser
    args = build_parser("serve").parse_args(["serve", "--random", "tiny", "-cb", "--jinja", "--no-mmap"])
    assert args.command == "serve"
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "<= 0 as in llama.cpp: one per physical core" in " ".join(capsys.readouterr().out.split())


def test_cli_errors_speak_in_flags_and_name_the_users_file(s260, assets, tmp_path, capsys):
    """The command line's errors give flags where the library's give keyword arguments (they said
    "pass allow_requantize=True, --allow-requantize", "kv_cache_k='q8_0' (-ctk)", "pass it as
    tokenizer="); a file that cannot be written is the path given, not its temporary name; an
    empty GGUF file is "too short" as a 20-byte one is (was "bad magic b''")."""
    q8 = tmp_path / "m-q8_0.gguf"
    assert main(["quantize", s260, str(q8), "q8_0"]) == 0
    capsys.readouterr()
    assert main(["quantize", str(q8), str(tmp_path / "m-q4.gguf"), "q4_0"]) == 1
    err = capsys.readouterr().err
    assert "pass --allow-requantize to do it anyway" in err and "allow_requantize=" not in err, err
    assert main(["generate", "-m", s260, "-p", "hi", "-ctk", "q8_0"]) == 1
    err = capsys.readouterr().err
    assert err == ("llamix generate: error: -ctk/--cache-type-k q8_0 needs head_dim to be a multiple of 32 (its block "
                   "size); this model's head_dim is 8\n"), err
    vocab = assets / "vocab" / "ggml-vocab-qwen2.gguf"
    assert main(["generate", "-m", str(vocab), "-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"give it as --tokenizer {vocab}\n") and "tokenizer=" not in err, err
    # the library keeps its own words
    with pytest.raises(llamix.ArgumentError, match=r"kv_cache_k='q8_0' needs head_dim"):
        llamix.load(s260, kv_cache_k="q8_0")
    with pytest.raises(llamix.FormatError, match="pass it as tokenizer="):
        llamix.load(vocab)
    # the file asked for, not out.gguf.XXXXXXXX.tmp
    assert main(["quantize", s260, "/proc/out.gguf", "q8_0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamix quantize: error: /proc/out.gguf: ") and ".tmp" not in err, err
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert main(["generate", "-m", str(empty), "-p", "hi"]) == 1
    assert capsys.readouterr().err == f"llamix generate: error: {empty}: file too short (0 bytes) to be GGUF: the " \
                                      "file is empty\n"


def test_threads_at_or_below_zero_are_the_default_as_in_llama_cpp(s260, capsys):
    """llama.cpp's -t N: N <= 0 is its default thread count (its help says -1); -t -1 was refused."""
    texts = []
    for t in ("-1", "0"):
        assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "6", "--temp", "0", "-t", t]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("Once upon a time")


_STORY = "Once upon a time there was a little girl. She liked to play in the park with her dog. " * 60


def test_ctx_size_zero_is_the_models_training_context(s260, tmp_path, capsys):
    """-c 0 is the model's training context (512 here), as llama.cpp reads it (was: 'must be
    positive'); a negative value is still refused; perplexity and imatrix take it too."""
    assert main(["generate", "-m", s260, "-p", "Once upon a time", "-n", "600", "-c", "0", "--temp", "0",
                 "--top-k", "1"]) == 0
    err = capsys.readouterr().err
    assert "go past the context (-c/--ctx-size 512)" in err, err
    assert main(["generate", "-m", s260, "-p", "hi", "-c", "-1"]) == 1
    assert "-c/--ctx-size must be positive (or 0: the model's training context), got -1" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text(_STORY)
    assert main(["perplexity", "-m", s260, "-f", str(text), "-c", "0", "--chunks", "1"]) == 0
    assert "1 chunks of 512" in capsys.readouterr().out
    assert main(["imatrix", "-m", s260, "-f", str(text), "-c", "0", "--chunks", "-1", "-o",
                 str(tmp_path / "im.gguf")]) == 0
    assert "chunks of 512 tokens" in capsys.readouterr().out


def test_serve_ctx_size_zero_splits_the_training_context_between_the_slots(monkeypatch, capsys):
    """serve -c 0 -np 2: the training context split between the slots, as llama-server does."""
    import llamix.commands.serve as serve_cmd
    from serving import free_port
    seen = {}
    monkeypatch.setattr(serve_cmd, "serve", lambda model, host, port, parallel, **kw: seen.update(
        n_ctx=model.n_ctx, trained=model.config.context_length, parallel=parallel))
    assert main(["serve", "--random", "tiny", "-c", "0", "-np", "2", "--port", str(free_port()), "-t", "1"]) == 0
    assert seen["parallel"] == 2 and seen["n_ctx"] == seen["trained"] // 2, seen
    assert main(["serve", "--random", "tiny", "-c", "6", "-np", "2", "--port", str(free_port()), "-t", "1"]) == 0
    assert seen["n_ctx"] == 3


def test_imatrix_warns_once_beyond_the_training_context(s260, tmp_path, capsys):
    """imatrix -c beyond the training context warns as generate and perplexity do (it said nothing)."""
    text = tmp_path / "t.txt"
    text.write_text(_STORY * 2)
    assert main(["imatrix", "-m", s260, "-f", str(text), "-c", "1024", "--chunks", "1", "-o",
                 str(tmp_path / "im.gguf")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: -c/--ctx-size 1024 is beyond the model's training context (512)") == 1, err


@pytest.mark.parametrize("argv, said", [
    (["serve", "--random", "tiny", "-f", "p.txt"], "unknown option -f: -f/--file (a prompt from a file) is llamix "
                                                   "generate's and llamix chat's"),
    (["bench", "-f", "p.txt"], "unknown option -f"),
    (["generate", "-m", "x.gguf", "-p", "hi", "--n-pred", "3"], "unrecognized arguments: --n-pred"),
    (["-m", "x.gguf", "-p", "hi"], "no command before -m: e.g. llamix generate -m x.gguf -p hi"),
])
def test_no_prefix_matching_of_flags(argv, said, capsys):
    """-f on serve and bench was argparse's prefix of -fa ("invalid choice: 'p.txt'"), and long flags
    could be abbreviated (--n-pred): now both are unknown options, as in llama.cpp; llama-cli's
    'llamix -m X -p hi' (no command) says to give one (was: "invalid choice: 'x.gguf'")."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert said in err, err


def test_chat_first_message_from_prompt_or_file_and_single_turn(s260, tmp_path, capsys, monkeypatch):
    """chat -p TEXT / -f FILE is the first user message, as llama-cli's in conversation mode; -st ends
    after its reply; -cnv and -i are accepted (chat is always a conversation)."""
    import io
    base = ["chat", "-m", s260, "--chat-format", "chatml", "-n", "6", "--temp", "0", "-t", "1"]
    monkeypatch.setattr("sys.stdin", io.StringIO("Once upon a time\n"))
    assert main(base) == 0
    want = capsys.readouterr().out
    assert want.count("\n") == 1
    f = tmp_path / "first.txt"
    f.write_text("Once upon a time")
    for flags in (["-f", str(f), "-st"], ["-p", "Once upon a time", "-st", "-cnv"], ["-f", str(f), "-i", "-st"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("a second message\n"))
        assert main([*base, *flags]) == 0, flags
        assert capsys.readouterr().out == want, flags
    monkeypatch.setattr("sys.stdin", io.StringIO("a second message\n"))
    assert main([*base, "-f", str(f)]) == 0
    assert capsys.readouterr().out.startswith(want)
