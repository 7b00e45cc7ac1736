"""Loading the embedded model: the self-check, a Hugging Face folder, a damaged conversion in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_llama

from pruneviz.core.errors import ModelSelfCheckError
from pruneviz.core.gating import gates_installed
from pruneviz.core.loading import SELF_CHECK_MAX_PERPLEXITY, from_modules, load_model, run_self_check


@pytest.mark.real
def test_self_check_passes_on_smollm2(smollm2):
    perplexity = run_self_check(smollm2)
    assert 1 < perplexity < 50
    info = smollm2.info
    assert (info.n_blocks, info.hidden_size, info.n_heads, info.n_kv_heads, info.head_dim) == (30, 576, 9, 3, 64)
    assert info.tied_embeddings and smollm2.model.lm_head.weight is smollm2.model.model.embed_tokens.weight
    assert smollm2.dtype == torch.float32 and smollm2.device == torch.device("cpu")
    assert gates_installed(smollm2.model) and len(smollm2.fingerprint) == 16
    assert smollm2.tokenizer.pad_token is not None


@pytest.mark.real
def test_random_model_fails_the_perplexity_check(smollm2):
    """A random model with a working tokenizer reads English at about vocabulary-size perplexity."""
    model = tiny_llama(vocab_size=len(smollm2.tokenizer), hidden_size=16)
    loaded = from_modules("random", model, tokenizer=smollm2.tokenizer)
    with pytest.raises(ModelSelfCheckError, match=f"expected < {SELF_CHECK_MAX_PERPLEXITY:.0f}"):
        run_self_check(loaded)


@pytest.mark.real
def test_load_hf_directory(smollm2, tmp_path):
    """A saved model directory loads through the same path, with a weight-based fingerprint."""
    model = tiny_llama(vocab_size=len(smollm2.tokenizer), hidden_size=16)
    model.save_pretrained(tmp_path / "tiny")
    smollm2.tokenizer.save_pretrained(tmp_path / "tiny")
    first = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32", self_check=False)
    again = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32", self_check=False)
    assert first.info.n_blocks == 4 and first.info.family == "llama" and gates_installed(first.model)
    assert first.fingerprint == again.fingerprint != smollm2.fingerprint
    assert first.dtype == torch.float32
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(first.logits(first.hidden_states(ids, torch.ones_like(ids))), model(ids).logits)
    # other weights, other fingerprint
    tiny_llama(vocab_size=len(smollm2.tokenizer), hidden_size=16, seed=5).save_pretrained(tmp_path / "tiny")
    assert load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32", self_check=False).fingerprint != first.fingerprint


@pytest.mark.real
def test_a_damaged_conversion_in_the_cache_is_converted_again(smollm2, tmp_path, monkeypatch):
    import shutil

    from pruneviz.core.cache import cache_dir

    converted = Path(smollm2.source)
    private = tmp_path / "cache"
    (private / "models").mkdir(parents=True)
    copy = private / "models" / converted.name
    shutil.copytree(converted, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # truncated, as by a full disk or a killed copy
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(private))
    assert cache_dir() == private
    again = load_model("smollm2", device="cpu", dtype="float32")
    assert Path(again.source) == copy and weights.stat().st_size == (converted / "model.safetensors").stat().st_size
    assert again.fingerprint == smollm2.fingerprint
