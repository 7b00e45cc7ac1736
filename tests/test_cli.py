"""The command-line interface, run as ``python -m pruneviz`` in subprocesses on the embedded model.

Subprocesses inherit ``PRUNEVIZ_CACHE_DIR`` from the session fixture, so they reuse the converted model.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruneviz.cli import build_parser, main
from pruneviz.data.mmlu import SUBJECT_CATEGORY

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert env["PRUNEVIZ_CACHE_DIR"]  # set by the session fixture in conftest.py
    return subprocess.run([sys.executable, "-m", "pruneviz", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


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
    result = _run("--help", timeout=120)
    assert result.returncode == 0
    for command in _commands():
        assert command in result.stdout


def test_info_subjects_without_a_model():
    result = _run("info", "--subjects", timeout=120)
    assert result.returncode == 0
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(lines) == 57 and dict(lines) == SUBJECT_CATEGORY


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_nonexistent_model_path_is_one_line_error(tmp_path):
    _assert_one_line_error(_run("info", "--model", str(tmp_path / "missing-model"), timeout=120), "No model at")


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
    _assert_one_line_error(_run("info", *args, timeout=120), *fragments)


@pytest.mark.real
class TestOnEmbeddedModel:
    """Each test starts one subprocess that loads the embedded model (a few seconds)."""

    @pytest.fixture(autouse=True)
    def _converted(self, smollm2):
        """Make sure the dequantised model exists before the subprocesses look for it."""

    def test_info_json(self):
        result = _run("info", "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["n_blocks"], info["hidden_size"], info["n_heads"], info["n_kv_heads"]) == (30, 576, 9, 3)
        assert info["params_attn"] == 885_312  # q 576², k, v 576x192, o 576² + input_layernorm 576
        assert info["params_mlp"] == 2_654_784  # gate, up, down 576x1536 + post_attention_layernorm 576
        assert info["tied_embeddings"] is True and info["family"] == "llama" and info["model"] == "smollm2"

    def test_a_repeated_metric_or_task_is_computed_and_written_once(self, tmp_path):
        out = tmp_path / "curve.csv"
        result = _run("curve", "--metric", "cosine, cosine", "--tasks", "wiki,wiki,mmlu:high_school_physics,mmlu:High School Physics",
                      "--steps", "1", "--samples", "2", "--seq-len", "32", "--windows", "1", "--window-len", "32",
                      "--per-subject", "1", "--out", str(out))
        assert result.returncode == 0, result.stderr
        rows = [(r["ranking"], r["step"], r["task"], r["metric"]) for r in csv.DictReader(out.open())]
        # steps 0 and 1, one ranking, two tasks (wiki: perplexity and nll), each row once
        assert len(rows) == len(set(rows)) and {r[0] for r in rows} == {"cosine@wiki"}
        assert {r[2] for r in rows} == {"wiki", "mmlu:high school physics"}
        assert sorted(r[1:] for r in rows if r[2] == "wiki") == [
            (step, "wiki", metric) for step in ("0", "1") for metric in ("nll", "perplexity")
        ]

    def test_influence_example(self, tmp_path, smollm2):
        out = tmp_path / "infl.csv"
        result = _run("influence", "--model", "smollm2", "--data", "wiki", "--metrics", "cosine,rel_l2",
                      "--granularity", "sublayer", "--samples", "8", "--seq-len", "128", "--dtype", "float32", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        with open(out, newline="") as handle:
            header = handle.readline().strip()
            rows = list(csv.DictReader(handle, fieldnames=header.split(",")))
        assert header == "unit,layer,sublayer,metric,value,stderr,dataset,dtype"
        assert len(rows) == 2 * 30 * 2
        expected_units = {f"{i}.{s}" for i in range(30) for s in ("attn", "mlp")}
        assert {r["unit"] for r in rows} == expected_units
        assert {(r["unit"], r["metric"]) for r in rows} == {(u, m) for u in expected_units for m in ("cosine", "rel_l2")}
        for row in rows:
            value = float(row["value"])
            assert math.isfinite(value) and value >= 0
            assert row["unit"] == f"{row['layer']}.{row['sublayer']}"
            assert row["stderr"] == "" and row["dataset"] == "wiki (calibration half)" and row["dtype"] == "float32"
            if row["metric"] == "cosine":
                assert value <= 2
        # the CSV holds the library's table: the in-process call with the same settings finds the
        # subprocess's result under the same cache key (same model fingerprint, data and parameters)
        from pruneviz import api

        table = api.influence(smollm2, "wiki", ["cosine", "rel_l2"], "sublayer", samples=8, seq_len=128)
        ours = {(r.unit, r.metric): r.value for r in table.itertuples()}
        assert len(ours) == len(rows)
        for row in rows:
            assert float(row["value"]) == pytest.approx(ours[(row["unit"], row["metric"])], rel=1e-12)

    def test_evaluate_example(self, tmp_path):
        out = tmp_path / "out.json"
        result = _run("evaluate", "--model", "smollm2", "--prune", "20.attn,21.attn", "--task", "mmlu",
                      "--format", "cloze", "--per-subject", "1", "--json", str(out))
        assert result.returncode == 0, result.stderr
        document = json.loads(out.read_text())
        assert {"task", "n", "metrics", "per_subject", "per_category", "prune", "recover", "seconds"} <= set(document)
        assert document["task"] == "mmlu" and document["n"] == 57
        assert set(document["metrics"]) == {"acc", "acc_norm"}
        assert all(0 <= v <= 1 for v in document["metrics"].values())
        assert document["prune"] == "20.attn,21.attn" and document["recover"] is None
        assert document["seconds"] > 0
        assert set(document["per_subject"]) == set(SUBJECT_CATEGORY)
        assert all(entry["n"] == 1 for entry in document["per_subject"].values())
        categories = document["per_category"]
        assert set(categories) == {"STEM", "humanities", "social sciences", "other"}
        assert sum(entry["n"] for entry in categories.values()) == 57
        correct = sum(entry["acc"] for entry in document["per_subject"].values())
        assert document["metrics"]["acc"] == pytest.approx(correct / 57)
        assert document["settings"]["format"] == "cloze"
        assert "n=57" in result.stdout and "prune='20.attn,21.attn'" in result.stdout

    @pytest.mark.parametrize(
        ("args", "fragments"),
        [
            (("evaluate", "--prune", "40.attn", "--task", "wiki", "--windows", "1", "--seq-len", "8"), ("'40.attn'", "0-29")),
            (("influence", "--metrics", "cosine,cosinus", "--samples", "1", "--seq-len", "8", "--out", "never.csv"), ("'cosinus'",)),
        ],
        ids=["plan-out-of-range", "unknown-metric"],
    )
    def test_bad_input_is_one_line_error(self, args, fragments, tmp_path):
        result = _run(*args)
        _assert_one_line_error(result, *fragments)
        assert result.stdout == ""
        assert not (REPO / "never.csv").exists()


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


@pytest.mark.real
def test_json_written_through_a_symbolic_link_keeps_the_link(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    assert main(["evaluate", "--device", "cpu", "--windows", "1", "--window-len", "8", "--json", str(link)]) == 0
    assert link.is_symlink() and json.loads(target.read_text())["task"] == "wiki"


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
