"""llamix merge's mergekit-yaml flags and the llamix-mergekit-yaml entry point (mergekit-yaml's
exact argument list): each flag's effect, the no-op flags' notes, the refused flags' reasons."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import llamix
from llamix.cli import main as cli_main
from llamix.cli import mergekit_yaml
from llamix.commands.merge import parse_kmb

from conftest import require_peer
from helpers import perturbed, read_model, tiny_tensors, write_model


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_models")
    base = tiny_tensors(0)
    paths = [write_model(root / f"m{i}", perturbed(base, i)) for i in range(2)]
    cfg = root / "merge.yml"
    cfg.write_text(yaml.safe_dump({"merge_method": "dare_linear", "base_model": str(paths[0]), "dtype": "float32",
                                   "models": [{"model": str(paths[1]), "parameters": {"weight": 1.0, "density": 0.5}}]}))
    return cfg


def test_kmb_sizes():
    assert parse_kmb("5B") == 5_000_000_000 and parse_kmb("500M") == 500_000_000 and parse_kmb("2k") == 2000
    assert parse_kmb("1234") == 1234
    for bad in ("5GB", "1.5B", "x", ""):
        with pytest.raises(Exception):
            parse_kmb(bad)


def test_mergekit_flags_change_the_output(tmp_path, config, capsys):
    out = tmp_path / "a"
    assert cli_main(["merge", str(config), str(out), "--out-shard-size", "2k", "--no-copy-tokenizer",
                     "--no-write-model-card", "--random-seed", "7", "-j", "1", "--quiet"]) == 0
    assert (out / "model.safetensors.index.json").exists() and len(list(out.glob("*.safetensors"))) > 2
    assert not (out / "README.md").exists() and not (out / "tokenizer_config.json").exists()
    out2 = tmp_path / "b"
    assert cli_main(["merge", str(config), str(out2), "--seed", "7", "-q"]) == 0
    assert (out2 / "README.md").exists() and (out2 / "mergekit_config.yml").exists()
    assert (out2 / "tokenizer_config.json").exists()
    a, b = read_model(out), read_model(out2)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # --random-seed is --seed; sharding changes no value
    out3 = tmp_path / "c"
    assert cli_main(["merge", str(config), str(out3), "--random-seed", "8", "-q"]) == 0
    assert any(not np.array_equal(read_model(out3)[k], b[k]) for k in b)


@pytest.mark.parametrize("flag,message", [
    ("--trust-remote-code", "runs no code from model repositories"), ("--cuda", "runs on the CPU"),
    ("--gpu-rich", "runs on the CPU"), ("--no-safe-serialization", "writes only safetensors"),
    ("--unsafe-truncate-embeddings", "tokenizer_source")])
def test_refused_flags_say_why(tmp_path, config, capsys, flag, message):
    assert cli_main(["merge", str(config), str(tmp_path / "out"), flag]) == 1
    err = capsys.readouterr().err
    assert flag in err and message in err and not (tmp_path / "out").exists()


def test_noop_flags_are_accepted_with_a_note(tmp_path, config, capsys):
    assert cli_main(["merge", str(config), str(tmp_path / "out"), "--lazy-unpickle", "--low-cpu-memory",
                     "--clone-tensors", "-v"]) == 0
    err = capsys.readouterr().err
    assert "--lazy-unpickle has no effect" in err and "--low-cpu-memory has no effect" in err
    assert "--clone-tensors has no effect" in err and "method dare_linear" in err  # -v prints the plan


def test_allow_crimes(tmp_path):
    base = tiny_tensors(1)
    a = write_model(tmp_path / "a", base)
    b = write_model(tmp_path / "b", perturbed(base, 2))
    cfg = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**cfg, "architectures": ["MistralForCausalLM"]}))
    path = tmp_path / "m.yml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": str(a), "parameters": {"weight": 1}},
                                                                         {"model": str(b), "parameters": {"weight": 1}}]}))
    assert cli_main(["merge", str(path), str(tmp_path / "o1"), "-q"]) == 1
    assert cli_main(["merge", str(path), str(tmp_path / "o2"), "--allow-crimes", "-q"]) == 0


def test_mergekit_yaml_entry_point(tmp_path, config, capsys):
    assert mergekit_yaml([str(config), str(tmp_path / "out"), "--out-shard-size", "5B", "--copy-tokenizer",
                          "--lazy-unpickle", "--quiet", "--num-threads", "1", "--write-threads", "2",
                          "--random-seed", "3"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert mergekit_yaml([str(config), str(tmp_path / "out2"), "--cuda"]) == 1
    # its messages give its own name (they said "llamix merge:")
    assert capsys.readouterr().err.startswith("llamix-mergekit-yaml: error: ")
    with pytest.raises(SystemExit):  # llamix's own flags are not mergekit-yaml's
        mergekit_yaml([str(config), str(tmp_path / "out3"), "-t", "1"])
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'llamix-mergekit-yaml = "llamix.cli:mergekit_yaml"' in pyproject


@pytest.mark.peers
def test_every_mergekit_yaml_option_is_accepted(tmp_path, config):
    """mergekit 0.1.5's options are MergeOptions' fields as click options (--name / --no-name for
    booleans, -v counted, -j for num_threads): llamix-mergekit-yaml parses each of them."""
    require_peer("mergekit")
    import typing

    from mergekit.options import MergeOptions
    from llamix.commands.mergekit_yaml import build_parser
    parser = build_parser()
    values = {int: "1", str: "cpu"}
    for name, info in MergeOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = info.annotation
        if typing.get_origin(ann) is typing.Union:
            ann = typing.get_args(ann)[0]
        if name == "verbosity":
            argv = ["-v", "-v"]
        elif name == "gpu_rich":
            argv = ["--gpu-rich"]
        elif ann is bool:
            parser.parse_args(["c", "o", "--no-" + flag[2:]])
            argv = [flag]
        elif name == "out_shard_size":
            argv = [flag, "5B"]
        else:
            argv = [flag, values.get(ann, "1")]
        parser.parse_args(["c", "o"] + argv)
    parser.parse_args(["c", "o", "-j", "2"])


def test_a_folder_given_as_the_config_is_named(tmp_path, config, capsys):
    """`llamix merge . out` (a folder where the YAML file belongs) names the folder (was: 'merge
    config: the merge config must be a mapping', the folder's name read as a YAML string)."""
    assert cli_main(["merge", str(config.parent), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"llamix merge: error: {config.parent}: a folder, not a merge config (a YAML file)\n"
    assert not (tmp_path / "out").exists()


def test_type_and_out_dtype_must_fit_the_output(tmp_path, config, capsys, assets):
    """--type with a folder OUT was ignored (a safetensors folder came out), and OUT.GGUF in capitals
    became a folder named so: the output's kind decides, and a flag that does not apply is refused."""
    assert cli_main(["merge", str(config), str(tmp_path / "out"), "--type", "q8_0"]) == 1
    assert "--type q8_0: only for an OUT ending in .gguf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli_main(["merge", str(config), str(tmp_path / "m.gguf"), "--out-dtype", "float16"]) == 1
    assert "--out-dtype float16: only for a Hugging Face folder" in capsys.readouterr().err
    for flag in ("--shard-size", "--out-shard-size"):  # were ignored: a GGUF output is one file
        assert cli_main(["merge", str(config), str(tmp_path / "m.gguf"), flag, "1K"]) == 1
        assert f"{flag}: only for a Hugging Face folder" in capsys.readouterr().err
    s260 = str(assets / "stories260K_hf")     # has a tokenizer for the GGUF
    gguf_cfg = tmp_path / "s260.yml"
    gguf_cfg.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": s260, "parameters": {"weight": 1.0}}]}))
    assert cli_main(["merge", str(gguf_cfg), str(tmp_path / "M.GGUF"), "--type", "q8_0", "-t", "1"]) == 0
    assert (tmp_path / "M.GGUF").is_file() and (tmp_path / "M.GGUF").read_bytes()[:4] == b"GGUF"
    assert cli_main(["merge", str(gguf_cfg), str(tmp_path / "d.gguf"), "-t", "1"]) == 0   # the default type
    assert "(q4_0," in capsys.readouterr().out
    assert mergekit_yaml([str(config), str(tmp_path / "folder")]) == 0                  # no --type there
    assert (tmp_path / "folder" / "config.json").is_file()


def test_merge_command_imports_only_the_merge_stack(tmp_path, config):
    """`llamix merge` to a folder, run as the console script runs it (argv from the command line),
    imports neither the GGUF exporter, the tokenizers, tqdm (no bar under -q),
    concurrent.futures nor the model or server stacks: each is start-up time every merge process
    paid for nothing. It still merges, and freezes its start-up objects for the collector."""
    out = tmp_path / "out"
    code = ("import gc, json, runpy, sys; sys.argv = ['llamix', 'merge', sys.argv[1], sys.argv[2], '-q']\n"
            "try:\n    runpy.run_module('llamix', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tqdm', 'llamix', 'concurrent'))))\n"
            "print(gc.get_freeze_count())")
    here = str(Path(llamix.__file__).resolve().parents[1])  # the llamix this test process imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    r = subprocess.run([sys.executable, "-c", code, str(config), str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    modules, frozen = r.stdout.strip().splitlines()[-2:]
    assert (out / "model.safetensors").exists()
    loaded = set(json.loads(modules))
    assert "llamix.merge.executor" in loaded  # the check sees the merge's own modules
    for heavy in ("tqdm", "concurrent.futures", "llamix.export.gguf", "llamix.export.merge_gguf", "llamix.tokenizer.core",
                  "llamix.formats.gguf", "llamix.model", "llamix.server", "llamix.eval"):
        assert heavy not in loaded, heavy
    assert int(frozen) > 1000
