"""The command-line interface without the embedded model: help, and bad input refused in one line before any
model loads (in-process and as ``python -m pruneviz`` subprocesses), with a tiny model folder where work is done.

Subprocesses inherit ``PRUNEVIZ_CACHE_DIR`` from the session fixture. The embedded model:
``tests/real/test_cli_real.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from helpers import assert_one_line_error, run_pruneviz

from pruneviz.cli import build_parser, main
from pruneviz.data.mmlu import SUBJECT_CATEGORY


def _commands() -> list[str]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return list(subparsers.choices)


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m pruneviz {command}") and "--model" in out


def test_commands_include_the_documented_ones():
    assert {"info", "influence", "evaluate"} <= set(_commands())


def test_module_help_runs():
    result = run_pruneviz("--help", timeout=120)
    assert result.returncode == 0
    for command in _commands():
        assert command in result.stdout


def test_info_subjects_without_a_model():
    result = run_pruneviz("info", "--subjects", timeout=120)
    assert result.returncode == 0
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(lines) == 57 and dict(lines) == SUBJECT_CATEGORY


def test_nonexistent_model_path_is_one_line_error(tmp_path):
    assert_one_line_error(run_pruneviz("info", "--model", str(tmp_path / "missing-model"), timeout=120), "No model at")


@pytest.mark.parametrize("command", _commands())
def test_every_model_command_takes_the_sharding_flags(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--device-map {auto,balanced,balanced_low_0,sequential}" in out and "--max-memory" in out and "--offload-folder" in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--max-memory", "gpu0=20GiB"), ("Cannot read the memory limit 'gpu0=20GiB'",)),
        (("--max-memory", "cpu=20GiB"), ("add --device-map auto",)),
        (("--device", "cpu", "--device-map", "auto"), ("either device 'cpu' or device map 'auto'",)),
    ],
    ids=["unreadable-limit", "limit-without-map", "device-and-map"],
)
def test_bad_sharding_flags_are_one_line_errors(args, fragments):
    assert_one_line_error(run_pruneviz("info", *args, timeout=120), *fragments)


@pytest.mark.parametrize("command", [
    ["influence", "--metrics", "cosine,cosinus", "--out", "never.csv"],
    ["curve", "--metric", "cosinus", "--steps", "2", "--out", "never.csv"],
])
def test_unknown_metric_is_refused_before_the_model_loads(command, capsys):
    # the model path does not exist: had it been loaded first, the error would name the path
    assert main([*command, "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert "'cosinus' is not available" in error and "nonexistent" not in error
    assert len(error.splitlines()) == 1



def test_no_metric_is_refused_before_the_model_loads(capsys):
    assert main(["influence", "--metrics", " , ", "--out", "never.csv", "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert "No metric was given" in error and "nonexistent" not in error


def _unusable_outputs(tmp_path):
    """(command, what the error names) pairs whose output path cannot be used, made under ``tmp_path``."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "important.txt").write_text("keep me")
    a_file = tmp_path / "a_file.csv"
    a_file.write_text("keep me")
    return [
        (["influence", "--out", str(folder)], "is a folder"),
        (["evaluate", "--json", str(folder)], "is a folder"),
        (["curve", "--steps", "1", "--out", str(tmp_path / "missing" / "c.csv")], "does not exist"),
        (["evaluate", "--json", "/dev/null"], "not a regular file"),
        (["recover", "--prune", "3", "--out", str(tmp_path / "full")], "not an empty folder"),
        (["recover", "--prune", "3", "--out", str(a_file)], "not an empty folder"),
        (["export", "--prune", "3", "--out", str(a_file)], "not an empty folder"),
        (["evaluate", "--json", str(a_file / "x.json")], "which is a file, not a folder"),
        (["export", "--prune", "3", "--out", str(a_file / "sub" / "dir")], "which is a file, not a folder"),
        # /proc refuses new files even to root, like a read-only mount
        (["influence", "--out", "/proc/pruneviz-never.csv"], "the folder /proc cannot be written"),
        (["recover", "--prune", "3", "--out", "/proc/pruneviz-never"], "the folder /proc cannot be written"),
    ]


def test_unusable_outputs_are_refused_before_any_work_and_nothing_is_overwritten(tmp_path, capsys):
    for command, fragment in _unusable_outputs(tmp_path):
        # the model path does not exist: had any work started, the error would name the path
        assert main([*command, "--model", "/nonexistent/model"]) == 2, command
        error = capsys.readouterr().err.strip()
        assert fragment in error and "nonexistent" not in error and len(error.splitlines()) == 1, (command, error)
    assert (tmp_path / "full" / "important.txt").read_text() == "keep me"
    assert (tmp_path / "a_file.csv").read_text() == "keep me"
    assert list((tmp_path / "folder").iterdir()) == []


def _parse_error(argv, capsys) -> str:
    """The stderr of an argument error, checked to be one line after exit status 2."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "--windows", "0"], "python -m pruneviz evaluate: error: argument --windows: must be 1 or more (got 0)"),
        (["evaluate", "--windows", "many"], "python -m pruneviz evaluate: error: argument --windows: must be a whole number (got 'many')"),
        (["influence", "--samples", "-3", "--out", "x.csv"], "python -m pruneviz influence: error: argument --samples: must be 1 or more (got -3)"),
        (["curve", "--steps", "0", "--out", "never.csv"], "python -m pruneviz curve: error: argument --steps: must be 1 or more (got 0)"),
        (["evaluate", "--shots", "-1"], "python -m pruneviz evaluate: error: argument --shots: must be 0 or more (got -1)"),
        ([], "python -m pruneviz: error: the following arguments are required: command"),
        (["recover", "--prune", "3", "--out", "never", "--lr", "nan"], "python -m pruneviz recover: error: argument --lr: must be a positive number (got nan)"),
        (["recover", "--prune", "3", "--out", "never", "--lr", "-0.1"], "python -m pruneviz recover: error: argument --lr: must be a positive number (got -0.1)"),
        (["recover", "--prune", "3", "--out", "never", "--lr", "fast"], "python -m pruneviz recover: error: argument --lr: must be a number (got 'fast')"),
    ],
    ids=["windows-zero", "windows-not-a-number", "samples-negative", "curve-steps-zero", "shots-negative", "no-command",
         "lr-nan", "lr-negative", "lr-not-a-number"],
)
def test_argument_errors_are_one_line_without_the_usage(argv, expected, capsys):
    prog = expected.split(": error: ")[0]
    assert _parse_error(argv, capsys) == f"{expected} (see '{prog} --help')"


@pytest.mark.parametrize("command", _commands())
def test_every_subcommand_parser_prints_one_line_errors(command, capsys):
    line = _parse_error([command, "--device-map", "nowhere"], capsys)
    assert line.startswith(f"python -m pruneviz {command}: error: argument --device-map: invalid choice: 'nowhere'")
    assert line.endswith(f"(see 'python -m pruneviz {command} --help')")


@pytest.mark.parametrize(
    ("command", "spec"),
    [
        (["evaluate", "--task"], "mmlu:"),
        (["influence", "--out", "never.csv", "--data"], "mmlu: , "),
        (["curve", "--steps", "2", "--out", "never.csv", "--tasks"], "wiki,mmlu:"),
        (["curve", "--steps", "2", "--out", "never.csv", "--data"], "mmlu:"),
        (["recover", "--prune", "3", "--out", "never", "--tasks"], "mmlu:,"),
    ],
    ids=["evaluate-task", "influence-data", "curve-tasks", "curve-data", "recover-tasks"],
)
def test_mmlu_colon_without_a_subject_is_refused_before_the_model_loads(command, spec, capsys):
    assert main([*command, spec, "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "nonexistent" not in error
    assert "names no MMLU subject or category after the colon" in error and "plain 'mmlu' for all 57 subjects" in error
    assert not (REPO / "never.csv").exists() and not (REPO / "never").exists()


@pytest.mark.parametrize("command", [["evaluate"], ["export", "--prune", "3", "--out", "never"]])
@pytest.mark.parametrize("kind", ["directory", "gguf"])
def test_a_model_given_as_recovery_is_named_as_a_model(command, kind, tmp_path, capsys):
    if kind == "directory":
        model = tmp_path / "some-model"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "llama"}')
    else:
        model = tmp_path / "model.gguf"
        model.write_bytes(b"GGUF")
    # the model path does not exist: had it been loaded first, the error would name the path
    assert main([*command, "--recover", str(model), "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {model} is a model, not a saved recovery; give it as the model, and as the recovery the folder "
        "`python -m pruneviz recover --out` wrote."
    )
    assert not (REPO / "never").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["evaluate", "--prune", "3.atn"], "'3.atn' is not a unit"),
        (["evaluate", "--prune", "   "], "only blanks"),
        (["export", "--prune", "\uff13", "--out", "never"], "is not a unit"),
        (["curve", "--steps", "1", "--tasks", ",", "--out", "never.csv"], "--tasks names no task (','); give a comma list"),
        (["recover", "--prune", "3,,4", "--out", "never"], "empty item between commas"),
    ],
    ids=["plan-typo", "blank-plan", "full-width-digit", "no-task", "empty-plan-item"],
)
def test_plans_and_task_lists_are_checked_before_the_model_loads(argv, fragment, capsys):
    assert main([*argv, "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and fragment in error and "nonexistent" not in error, error
    assert not (REPO / "never.csv").exists() and not (REPO / "never").exists()


def test_a_malformed_state_budget_is_one_line(tiny_model_dir, without_self_check, monkeypatch, capsys):
    from pruneviz.engine import incremental

    monkeypatch.setenv("PRUNEVIZ_STATE_CPU_MB", "lots")
    monkeypatch.setattr(incremental, "_store", None)  # the next evaluation creates the store and reads the budgets
    assert main(["evaluate", "--model", str(tiny_model_dir), "--windows", "1", "--window-len", "16", "--no-cache"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: PRUNEVIZ_STATE_CPU_MB must be a whole number of MiB (got 'lots'); fix or unset it."


def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A first document.\n\nA second one.\n")
    assert main(["evaluate", "--task", str(corpus), "--json", str(corpus), "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: --json {corpus} is an input of this command; writing the result there would overwrite it, so choose another path."
    assert corpus.read_text() == "A first document.\n\nA second one.\n"


@pytest.mark.parametrize("option", ["--model", "--task", "--json"])
def test_an_over_long_path_is_one_line(option, tiny_model_dir, without_self_check, tmp_path, capsys):
    long = str(tmp_path / ("x" * 5000))  # over the file system's 255-byte limit for a name
    values = {"--model": str(tiny_model_dir), "--task": "wiki", "--json": str(tmp_path / "out.json")} | {option: long}
    argv = ["evaluate", "--windows", "1", "--window-len", "16", "--no-cache", *[x for pair in values.items() for x in pair]]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot be used (File name too long)" in error and "characters)" in error, error


def test_a_destination_that_fails_after_the_work_keeps_the_result(tiny_model_dir, without_self_check, tmp_path, monkeypatch, capsys):
    import shutil

    from pruneviz import api
    from pruneviz.core.cache import cache_dir

    folder = tmp_path / "results"
    folder.mkdir()
    evaluate = api.evaluate

    def evaluate_then_lose_the_folder(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        shutil.rmtree(folder)  # the destination goes away while the work runs (an unmounted disk, say)
        return result

    monkeypatch.setattr(api, "evaluate", evaluate_then_lose_the_folder)
    out = folder / "result.json"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--windows", "1", "--window-len", "16", "--json", str(out)]) == 2
    error = capsys.readouterr().err.strip().split("\r")[-1]  # after the progress bar's last redraw
    assert error.startswith(f"error: Could not write {out} (No such file or directory); the result is kept in {cache_dir() / 'unwritten'}/")
    kept = Path(error.rsplit(" is kept in ", 1)[1].removesuffix("."))
    assert json.loads(kept.read_text())["task"] == "wiki" and kept.name.endswith("-result.json")


def test_a_resumed_evaluation_says_what_it_reused(tiny_model_dir, without_self_check, tmp_path, capsys):
    from pruneviz import api
    from pruneviz.core.errors import Cancelled
    from pruneviz.core.loading import load_model
    from pruneviz.core.plan import PruningPlan

    finished = []

    def stop_after_the_first_batch(done, total):
        finished.append(done)
        if done < total:
            raise Cancelled("stopped by the test")

    # 4 windows of 256 tokens do not fit one CPU batch (512 tokens): the run stops after its first batch
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    with pytest.raises(Cancelled):
        api.evaluate(loaded, PruningPlan.parse("2.mlp"), "wiki", windows=4, seq_len=256, progress=stop_after_the_first_batch)
    assert finished and 0 < finished[0] < 4
    argv = ["evaluate", "--model", str(tiny_model_dir), "--dtype", "float32", "--task", "wiki", "--windows", "4",
            "--window-len", "256", "--prune", "2.mlp", "--json", str(tmp_path / "resumed.json")]
    assert main(argv) == 0
    assert f"Resumed: {finished[0]} of 4 windows were read from checkpoints an earlier run left" in capsys.readouterr().out
    document = json.loads((tmp_path / "resumed.json").read_text())
    assert document["settings"]["resumed"] == finished[0] and document["n"] == 4
    # a run that finds the whole result in the cache has nothing to resume
    assert main(argv[:-2]) == 0
    assert "Resumed" not in capsys.readouterr().out
