"""Loading: untied heads, unsupported and missing models, damaged weights, device and dtype resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from torch import nn

from pruneviz.core.errors import ModelLoadError, ModelSelfCheckError, UnsupportedArchitectureError
from pruneviz.core.loading import from_modules, load_model, resolve_device, resolve_dtype, run_self_check


def test_untied_head_for_tied_config_is_rejected():
    model = tiny_llama()
    assert model.config.tie_word_embeddings
    # a loader that untied the head: a separate matrix where the config says tied
    model.lm_head.weight = nn.Parameter(torch.randn_like(model.lm_head.weight))
    loaded = from_modules("untied", model, tokenizer=None)
    with pytest.raises(ModelSelfCheckError, match="tied embeddings"):
        run_self_check(loaded)


def test_encoder_only_directory_is_unsupported(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedArchitectureError) as caught:
        load_model(str(tmp_path / "bert"), device="cpu")
    message = str(caught.value)
    assert "bert" in message and "llama" in message and "qwen2" in message


@pytest.mark.parametrize("spec", ["/nonexistent/model/dir", "./no-such-model.gguf", "no/such/deep/path", "~/no-such-dir-xyz"])
def test_nonexistent_path_raises_model_load_error(spec):
    with pytest.raises(ModelLoadError, match="No model at"):
        load_model(spec, device="cpu")


def test_directory_without_config_or_odd_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="neither a model directory nor a .gguf"):
        load_model(str(tmp_path / "weights.bin"))


def test_unreachable_hub_id_raises_model_load_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model", device="cpu")


def test_auto_dtype_on_the_cpu_follows_its_native_bf16_instructions(monkeypatch):
    from pruneviz.core import loading

    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert loading.cpu_has_native_bf16() == native, "torch's probe and the kernel's flags disagree"
    cpu = resolve_device("cpu")
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    for has_bf16, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: has_bf16)
        assert resolve_dtype("auto", cpu) == expected
        assert resolve_dtype("float32", cpu) == torch.float32, "float32 stays available as the reference"


def test_native_bf16_probe_falls_back_to_cpuinfo_flags(monkeypatch, tmp_path):
    from pruneviz.core import loading

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    for text, expected in [("flags : fpu avx2 avx512f avx512_bf16 sse", True), ("flags : fpu amx_bf16 amx_tile", True),
                           ("flags : fpu avx2 avx512f", False)]:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(text)
        monkeypatch.setattr(loading, "CPUINFO", cpuinfo)
        assert loading.cpu_has_native_bf16() is expected, text


def test_device_and_dtype_resolution():
    cpu = resolve_device("cpu")
    assert cpu == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    for bad in ["float33", "nn", "int8", "Tensor"]:
        with pytest.raises(ModelLoadError, match=f"'{bad}'"):
            resolve_dtype(bad, cpu)
    with pytest.raises(ModelLoadError, match="'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="'cuda'"):
            resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="'cuda:64'"):
        resolve_device("cuda:64")


def test_a_damaged_weights_file_in_a_model_folder_is_named(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match=r"^The weights file .*copy/model.safetensors is damaged \(.+\); restore that file"):
        load_model(str(folder), device="cpu", self_check=False)
