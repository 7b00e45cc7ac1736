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
