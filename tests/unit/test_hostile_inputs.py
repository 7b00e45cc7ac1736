"""Bad inputs found by the second hostile pass (docs/RELIABILITY.md): each one sentence, before any work."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

from pruneviz.cli import main
from pruneviz.core.cost import plan_cost
from pruneviz.core.errors import DataError, ModelLoadError, SettingError
from pruneviz.core.plan import PruningPlan, units_of
from pruneviz.data.tasks import TaskSpec
from pruneviz.evaluation.perplexity import perplexity_windows
from pruneviz.influence.registry import check_metrics


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cpu:7", "cuda:x"])
def test_a_device_torch_would_fail_on_inside_the_load_is_refused_by_name(device):
    from pruneviz.core.loading import resolve_device

    with pytest.raises(ModelLoadError, match=rf"^Unknown device '{device}'; use auto, cpu, cuda or cuda:N\.$"):
        resolve_device(device)


def test_a_cache_directory_that_is_a_file_is_one_sentence(tmp_path, monkeypatch):
    from pruneviz.core.cache import cache_dir

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(blocker))
    with pytest.raises(SettingError, match="cannot be used .*set PRUNEVIZ_CACHE_DIR to a folder you can write"):
        cache_dir()


def test_zero_perplexity_windows_are_refused_not_a_silent_nan():
    with pytest.raises(SettingError, match="at least 1 window"):
        perplexity_windows(SimpleNamespace(max_length=64), "wiki", 0, 16)


def test_a_negative_shapley_tolerance_is_refused(tiny):
    from pruneviz.influence.shapley import adaptive_influence

    with pytest.raises(SettingError, match="cannot be negative"):
        adaptive_influence(tiny, None, units_of(4, "block"), estimator="permutation", tolerance=-1)


@pytest.mark.parametrize("spec", ["", "   ", None])
def test_an_empty_task_is_refused(spec):
    with pytest.raises(DataError, match="The task or dataset is empty"):
        TaskSpec.parse(spec)


def test_mmlu_in_capitals_is_mmlu():
    assert TaskSpec.parse("MMLU") == TaskSpec.parse("mmlu") and TaskSpec.parse("MMLU:Anatomy").spec == "mmlu:anatomy"


def test_metrics_given_as_one_string_are_refused_not_read_letter_by_letter():
    with pytest.raises(SettingError, match="list of names"):
        check_metrics("cosine")


def test_a_negative_context_has_no_cost(tiny):
    with pytest.raises(SettingError, match="context >= 1"):
        plan_cost(tiny.info, PruningPlan.parse("1"), value_bytes=2, context=-5)


@pytest.mark.parametrize("option", ["--json", "--out"])
def test_an_empty_output_path_is_refused_before_the_model_loads(option, capsys):
    command = ["evaluate", "--task", "wiki", "--json", ""] if option == "--json" else ["influence", "--data", "wiki", "--out", ""]
    assert main([*command, "--model", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{option} is empty" in error and "nonexistent" not in error


@pytest.mark.parametrize(("typed", "meant"), [("gemma3-270", "gemma3-270m"), ("SmolLM2", "smollm2")])
def test_a_mistyped_embedded_model_gets_a_suggestion(typed, meant):
    from pruneviz.core.loading import _locate

    with pytest.raises(ModelLoadError, match=rf"neither an embedded model nor a path; did you mean {meant}\?"):
        _locate(typed)


def test_a_truncated_gguf_file_is_named_as_damaged(tmp_path):
    from pruneviz.core.assets import EMBEDDED_MODELS
    from pruneviz.core.loading import load_model

    truncated = tmp_path / "cut.gguf"
    with open(EMBEDDED_MODELS["smollm2"].path(), "rb") as whole:
        truncated.write_bytes(whole.read(100_000))
    with pytest.raises(ModelLoadError, match="cut.gguf .*it may be truncated or damaged: copy or download it again"):
        load_model(str(truncated), device="cpu", dtype="float32")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_training_that_never_improved_says_so():
    from pruneviz.studies.recovery import Recovery

    diverged = Recovery(PruningPlan.parse("1"), "lowrank", 2, "train", {}, 0, "wiki", history=[3.52, 10.8, 9.9])
    improved = Recovery(PruningPlan.parse("1"), "lowrank", 2, "train", {}, 0, "wiki", history=[3.52, 3.4, 3.3])
    assert diverged.training_failed and not improved.training_failed


def test_an_output_inside_the_cache_or_the_python_installation_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    """Third hostile pass: --json onto the cache's secret key (every cached result lost) or onto an embedded data file."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(cache))
    (cache / "secret.key").write_bytes(b"k" * 32)
    packages = Path(sysconfig.get_paths()["purelib"])
    for target in (cache / "secret.key", packages / "pruneviz-result.json"):
        code = main(["evaluate", "--model", "/nonexistent-model", "--task", "wiki", "--json", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and "whose files pruneviz reads; choose a path outside it" in err and "Traceback" not in err, err
    assert (cache / "secret.key").read_bytes() == b"k" * 32
    assert not (packages / "pruneviz-result.json").exists()


@pytest.mark.parametrize("text", ["²", "١٢", "12²"])
def test_digits_that_are_not_ascii_are_one_sentence_not_a_traceback(text, monkeypatch):
    """Third hostile pass: str.isdigit accepts a superscript two, which int() refuses."""
    from pruneviz.core.loading import parse_max_memory
    from pruneviz.engine.incremental import budgets_from_environment

    monkeypatch.setenv("PRUNEVIZ_STATE_CPU_MB", text)
    with pytest.raises(SettingError, match="must be a whole number of MiB"):
        budgets_from_environment()
    with pytest.raises(ModelLoadError, match="Cannot read"):
        parse_max_memory(f"cpu={text}")


def test_a_full_disk_during_conversion_is_one_sentence_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """Third hostile pass: the converted model's weights did not fit (SafetensorError / OSError 28): a traceback and a
    half-written staging folder before."""
    import errno

    import transformers

    from pruneviz.core.assets import EMBEDDED_MODELS
    from pruneviz.core.loading import load_model

    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "copy.gguf"
    shutil.copyfile(EMBEDDED_MODELS["smollm2"].path(), gguf)

    def full_disk(self, directory, *args, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full_disk)
    with pytest.raises(ModelLoadError, match="Could not write the converted model .*No space left on device.*free some space"):
        load_model(str(gguf), device="cpu", dtype="float32")
    assert list((tmp_path / "cache" / "models").iterdir()) == [], "no staging folder or half-converted model is left"


@pytest.mark.parametrize("typed, meant", [("humanevl", "humaneval"), ("brackets", "parens"), ("arithmetc", "arithmetic")])
def test_a_mistyped_generative_task_gets_a_suggestion(typed, meant):
    """Third hostile pass: 'No text file at humanevl' said nothing of the task meant."""
    from pruneviz.data.text import load_corpus

    with pytest.raises(DataError, match=rf"No text file at {typed}; .*did you mean the built-in task {meant}\?"):
        load_corpus(typed, "evaluation")
    with pytest.raises(DataError) as plain:
        load_corpus("my-notes.txt", "evaluation")
    assert "did you mean" not in str(plain.value)


# the fourth pass (session 9): what the third left late or silent


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "--task", "humanevl"], "neither a task pruneviz scores .*did you mean the built-in task humaneval\\?"),
    (["evaluate", "--task", "humaneval", "--backend", "lm-eval"], "HumanEval runs on the pruneviz backend only"),
    (["evaluate", "--task", "missing-notes.txt"], "No text file at missing-notes.txt"),
    (["influence", "--data", "humaneval", "--out", "OUT"], "HumanEval is a generative task: evaluate plans on it; compute influence"),
    (["curve", "--data", "arithmetic", "--steps", "1", "--out", "OUT"], "Arithmetic is a generative task"),
    (["curve", "--tasks", "wiki,mmlu:anatomy,paren", "--steps", "1", "--out", "OUT"], "did you mean the built-in task parens\\?"),
    (["recover", "--prune", "3", "--tasks", "wiki,humanevl", "--out", "OUTDIR"], "did you mean the built-in task humaneval\\?"),
])
def test_a_task_that_cannot_be_evaluated_is_refused_before_the_model_loads(argv, said, tmp_path, monkeypatch, capsys):
    """Third hostile pass: these were found only after the model had loaded (in a curve, after the ranking: 97 s)."""
    import pruneviz.core.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the input was checked"))
    argv = [str(tmp_path / "out.csv") if a == "OUT" else str(tmp_path / "new") if a == "OUTDIR" else a for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(said, err), err


@pytest.mark.parametrize("argv, option", [
    (["evaluate", "--task", "humaneval", "--shots", "5"], "--shots"),
    (["evaluate", "--task", "arithmetic", "--half", "test"], "--half"),
    (["evaluate", "--task", "parens", "--format", "letter"], "--format"),
    (["evaluate", "--task", "humaneval", "--mmlu-source", "cais/mmlu"], "--mmlu-source"),
    (["evaluate", "--task", "mmlu", "--per-task", "5"], "--per-task"),
    (["evaluate", "--task", "wiki", "--prompt-format", "plain"], "--prompt-format"),
    (["evaluate", "--task", "mmlu", "--windows", "4"], "--windows"),
    (["curve", "--tasks", "wiki,humaneval", "--steps", "1", "--per-subject", "2", "--out", "OUT"], "--per-subject"),
])
def test_an_option_no_task_reads_is_refused_not_ignored(argv, option, tmp_path, monkeypatch, capsys):
    """Third hostile pass: --shots, --half, --format and --mmlu-source were ignored silently with a generative task."""
    import pruneviz.core.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the input was checked"))
    code = main([str(tmp_path / "out.csv") if a == "OUT" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and f"{option} applies to " in err and f"drop {option} or add such a task" in err, err


def test_options_some_task_reads_are_accepted(monkeypatch, capsys):
    """The check refuses only options no task reads: --shots with MMLU beside a generative task is used by MMLU."""
    import pruneviz.cli as cli
    from pruneviz.cli import build_parser

    args = build_parser().parse_args(["curve", "--tasks", "mmlu:anatomy,humaneval", "--steps", "1", "--shots", "1", "--per-task", "3", "--out", "x.csv"])
    cli._check_inputs(args)  # no error
    args = build_parser().parse_args(["evaluate", "--task", "arithmetic", "--per-task", "9999"])
    cli._check_inputs(args)
    assert "Arithmetic has 500 items; --per-task 9999 scores all of them." in capsys.readouterr().out


def test_a_conversion_is_redone_when_its_gguf_file_changed_in_the_middle(tmp_path):
    """Third hostile pass: the converted folder is named by the file's size and first and last MiB, so damage in the
    middle reused the old conversion."""
    import os

    from pruneviz.core.loading import SOURCE_RECORD, _converted_from, _directory_fingerprint

    source, converted = tmp_path / "model.gguf", tmp_path / "converted"
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    source.write_bytes(os.urandom(3 << 20))
    fingerprint = _directory_fingerprint(converted)
    assert _converted_from(converted, source), "a conversion without a record (made before records) is kept, and recorded"
    assert (converted / SOURCE_RECORD).is_file() and _directory_fingerprint(converted) == fingerprint
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    source.write_bytes(bytes(data))
    assert not _converted_from(converted, source), "damage in the middle, same size and ends"
    data[len(data) // 2] ^= 0xFF
    source.write_bytes(bytes(data))
    assert _converted_from(converted, source), "touched but equal: kept (the whole file was compared)"
    # a conversion made from now on names its source's digest in its fingerprint, so a conversion redone after the
    # file changed in the middle (weights that differ only in the middle) does not share the old one's results
    import json

    fingerprints = []
    for record in ({"converted": True, "digest": "a"}, {"converted": True, "digest": "b"}, {"converted": False, "digest": "b"}):
        (converted / SOURCE_RECORD).write_text(json.dumps(record))
        fingerprints.append(_directory_fingerprint(converted))
    assert fingerprints[0] != fingerprints[1] and fingerprints[2] == fingerprint


def test_a_share_at_zero_or_all_items_has_a_wilson_interval_and_json_has_no_nan():
    """Third hostile pass: 0 of n had a standard error of 0 ("0.0 % ± 0.0 %"), and --json wrote bare NaN."""
    import json

    import pandas as pd

    from pruneviz.evaluation.results import EvaluationResult, comparison_json, proportion_interval
    from pruneviz.evaluation.statistics import with_ci

    low, high = proportion_interval(0.0, 20)
    assert low == 0.0 and abs(high - 0.1611) < 1e-3  # Wilson: z² / (n + z²) at 0 of n
    assert proportion_interval(1.0, 20) == pytest.approx((1 - 0.1611, 1.0), abs=1e-3)
    assert proportion_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    assert with_ci(0.0, 0.0, 100, 1, " %", n=20) == "0.0 % (95 % CI 0.0 to 16.1 %)"
    assert with_ci(0.5, 0.05, 100, 1, " %", n=100) == "50.0 % ± 9.8 %", "away from the bounds the symmetric interval stays"
    result = EvaluationResult("humaneval", 1, {"pass@1": 0.0}, {"pass@1": float("nan")}, "", 1.0, {}, pd.DataFrame({"correct": [False]}))
    document = result.to_json()
    assert document["stderr"]["pass@1"] is None and document["ci95"]["pass@1"][1] > 0.7
    json.dumps(document, allow_nan=False)
    assert "NaN" not in comparison_json("1", None, {"humaneval": (result, result)})


def test_a_part_package_pip_calls_installed_but_whose_files_are_gone_is_reinstalled_or_named(tmp_path, monkeypatch):
    """Third hostile pass: a part package whose folder was deleted: pip answered "Requirement already satisfied",
    installed nothing, and the load asked again for the same install, in a loop."""
    import subprocess

    import pruneviz.core.assets as assets

    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path / "cache"))
    model = next(m for m in assets.EMBEDDED_MODELS.values() if isinstance(m, assets.PartedModel))
    commands = []
    monkeypatch.setattr(assets, "_installed", lambda module: False)  # the folders are gone, the metadata is not
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: commands.append(command) or subprocess.CompletedProcess(command, 0, "", ""))
    with pytest.raises(ModelLoadError, match=rf"pip installed {model.packages[0]}, but its files cannot be found by this Python"):
        model.path(install=True)
    assert commands and all("--force-reinstall" in command for command in commands)


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "--task", "mmlu:nonsense"], "'nonsense' is neither an MMLU subject nor a category"),
    (["evaluate", "--task", "mmlu:anatomy,wiki"], "'wiki' is neither an MMLU subject nor a category"),
    (["evaluate", "--task", "mmlu", "--mmlu-source", "/nonexistent/questions.json"], "nonexistent"),
    (["influence", "--data", "wiki", "--half", "fit", "--out", "OUT"], "--half applies to MMLU only, and this command evaluates Wikipedia"),
    (["influence", "--data", "wiki", "--metrics", "cosine", "--estimator", "permutation", "--out", "OUT"],
     "--estimator applies to Shapley metrics only, and this command computes cosine"),
    (["curve", "--tasks", "wiki", "--steps", "1", "--budget", "5", "--out", "OUT"], "--budget applies to Shapley metrics only"),
    (["curve", "--tasks", "wiki", "--steps", "1", "--heldout", "--out", "OUT"], "--heldout splits MMLU questions, and neither"),
])
def test_the_fourth_passs_late_and_silent_inputs_are_refused_before_the_load(argv, said, tmp_path, monkeypatch, capsys):
    """Fourth hostile pass: an unknown MMLU subject and a missing question file were found after the model loaded;
    influence's --half with Wikipedia, estimator options without a Shapley metric and --heldout without MMLU were
    ignored without a word."""
    import re

    import pruneviz.core.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the input was checked"))
    code = main([str(tmp_path / "out.csv") if a == "OUT" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(re.escape(said), err), err


def test_json_intervals_are_for_estimates_and_never_below_zero_for_what_cannot_be():
    """Fourth hostile pass: `tokens` (a count) had an interval, and a KL interval reached below 0."""
    import pandas as pd

    from pruneviz.evaluation.results import EvaluationResult

    result = EvaluationResult("wiki", 3, {"perplexity": 10.0, "nll": 2.3, "tokens": 381, "kl": 0.01},
                              {"perplexity": 1.0, "nll": 0.1, "kl": 0.02}, "3", 1.0, {}, pd.DataFrame())
    intervals = result.to_json()["ci95"]
    assert set(intervals) == {"perplexity", "nll", "kl"}
    assert intervals["kl"][0] == 0.0 and intervals["kl"][1] == pytest.approx(0.01 + 1.959964 * 0.02)
    assert intervals["nll"] == pytest.approx([2.3 - 0.196, 2.3 + 0.196], abs=1e-3)


def test_built_in_names_are_read_in_any_case_and_only_humaneval_is_said_to_use_a_sandbox():
    from pruneviz.evaluation.run import check_task

    assert TaskSpec.parse("Wiki").spec == "wiki" and TaskSpec.parse("HUMANEVAL").spec == "humaneval"
    with pytest.raises(SettingError, match=r"^Arithmetic runs on the pruneviz backend only \(its own decoder\); drop"):
        check_task("arithmetic", "lm-eval")
    with pytest.raises(SettingError, match=r"\(its own decoder and sandbox\)"):
        check_task("humaneval", "lm-eval")


def test_a_built_in_name_in_another_case_is_read_as_the_built_in_one_end_to_end(tiny_model_dir, fresh_cache):
    """Review of the fourth pass: `Wiki` passed the early check and then failed after the load, where the evaluators
    were handed the text as typed."""
    from pruneviz import api
    from pruneviz.core.loading import load_model
    from pruneviz.influence.calibration import calibration_batch

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", self_check=False)
    typed = api.evaluate(loaded, PruningPlan(), "Wiki", windows=2, seq_len=16)
    again = api.evaluate(loaded, PruningPlan(), "wiki", windows=2, seq_len=16)
    assert typed.task == "wiki" and again.from_cache and again.metrics == typed.metrics, "one result, one cache entry"
    assert calibration_batch(loaded, "WIKI", 2, 16)[1] == calibration_batch(loaded, "wiki", 2, 16)[1]
