"""Demo / shared-mode settings and the server's memory accounting (pruneviz.deployment)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from pruneviz.core.errors import SettingError
from pruneviz.core.formatting import format_bytes
from pruneviz.deployment import (
    CONFIG_ENV,
    DEMO_ENV,
    Deployment,
    Limits,
    load_deployment,
    memory_usage,
    process_rss_bytes,
    release_memory,
)

CONFIG = """
demo = true
models = ["smollm2", "/models/llama"]
datasets = ["wiki", "/data/notes.txt"]
dtype = "float32"

[limits]
seq_len = 64
per_subject = 3
"""


def test_outside_demo_mode_nothing_is_capped():
    deployment = load_deployment(environ={}, argv=["app.py"])
    assert not deployment.demo
    assert deployment.cap("seq_len", 8192) == 8192 and deployment.cap("samples", 1024) == 1024
    assert deployment.offers_dataset("/any/file.txt") and deployment.offers_dataset("mmlu:STEM")


@pytest.mark.parametrize("environ, argv", [({DEMO_ENV: "1"}, []), ({DEMO_ENV: "true"}, []), ({}, ["app.py", "--demo"])])
def test_environment_or_flag_turns_demo_mode_on_with_default_limits(environ, argv):
    deployment = load_deployment(environ=environ, argv=argv)
    assert deployment.demo and deployment.models == ("smollm2",)
    assert deployment.cap("seq_len", 8192) == Limits().seq_len == 256
    assert deployment.cap("seq_len", 100) == 100  # a model's shorter context still wins
    assert deployment.cap("new_tokens", 256) == 64
    assert deployment.offers_dataset("wiki") and deployment.offers_dataset("mmlu:anatomy")
    assert not deployment.offers_dataset("/etc/passwd")


def test_configuration_file_sets_models_datasets_and_limits(tmp_path):
    path = tmp_path / "pruneviz.toml"
    path.write_text(CONFIG)
    deployment = load_deployment(environ={CONFIG_ENV: str(path)}, argv=[])
    assert deployment == Deployment(
        demo=True, models=("smollm2", "/models/llama"), datasets=("wiki", "/data/notes.txt"), dtype="float32",
        limits=Limits(seq_len=64, per_subject=3),
    )
    assert deployment.cap("per_subject", 2000) == 3 and deployment.cap("samples", 1024) == 32
    assert deployment.offers_dataset("/data/notes.txt") and not deployment.offers_dataset("mmlu")
    # the environment overrides the file's demo switch
    assert not load_deployment(environ={CONFIG_ENV: str(path), DEMO_ENV: "0"}, argv=[]).demo


@pytest.mark.parametrize("text, message", [
    ("demo = yes", "not valid TOML"),
    ("demo = 1", "'demo' .* must be true or false"),
    ("modles = ['smollm2']", "Unknown key 'modles'"),
    ("models = []", "non-empty list of strings"),
    ("[limits]\nseq_len = 0", "limits.seq_len .* at least 1"),
    ("[limits]\ntokens = 5", "Unknown limit 'tokens'"),
])
def test_a_bad_configuration_file_is_one_clear_sentence(tmp_path, text, message):
    path = tmp_path / "pruneviz.toml"
    path.write_text(text)
    with pytest.raises(SettingError, match=message):
        load_deployment(environ={CONFIG_ENV: str(path)}, argv=[])


def test_a_missing_configuration_file_names_the_variable(tmp_path):
    with pytest.raises(SettingError, match=f"Cannot read the configuration file .*missing.toml.*{CONFIG_ENV}"):
        load_deployment(environ={CONFIG_ENV: str(tmp_path / "missing.toml")}, argv=[])


def test_unknown_limit_name_is_refused():
    with pytest.raises(SettingError, match="'windows' is not a deployment limit"):
        Deployment(demo=True).cap("windows", 10)


def test_memory_usage_sees_a_new_allocation():
    import mmap

    before = process_rss_bytes()
    # 64 MiB of fresh anonymous pages, each touched: a bytearray could reuse pages the allocator already holds
    # resident (freed by earlier tests), and then the resident size would not move
    block = mmap.mmap(-1, 64 << 20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    after = memory_usage()
    assert after["rss"] - before >= 48 << 20
    assert ("cuda_allocated" in after) == torch.cuda.is_available()
    block.close()


def test_release_memory_collects_an_unreachable_model():
    model = torch.nn.Linear(256, 256)
    model.self_reference = [model]  # a cycle: only the garbage collector frees it
    alive = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert alive() is not None
        release_memory()
        assert alive() is None
    finally:
        gc.enable()


def test_format_bytes_uses_binary_units():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
