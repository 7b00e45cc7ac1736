"""Shared fixtures. Session fixtures are read-only: tests must not modify the models they hand out.

* ``tiny``: a randomly initialised 4-block Llama (d=32, vocab 128) wrapped as a ``LoadedModel`` (no tokenizer).
* ``smollm2``: the real embedded SmolLM2-135M-Instruct in float32 (the reference dtype) on the CPU, loaded once per session.
* ``fresh_cache``: an empty result cache for one test.

This file serves every tier folder (``unit/``, ``real/``, ``browser/``); ``pythonpath = ["tests"]`` in pyproject.toml
lets tests import its plain helpers (``from conftest import REPO, tiny_llama``).

The result cache lives in a fresh temporary directory per session; the dequantised embedded model is
kept in the repository's ``cache/models`` so that only the first run pays for the conversion.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point ``PRUNEVIZ_CACHE_DIR`` at a fresh directory that shares only the converted models."""
    root = tmp_path_factory.mktemp("pruneviz-cache")
    models = REPO / "cache" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(models, target_is_directory=True)
    os.environ["PRUNEVIZ_CACHE_DIR"] = str(root)
    yield root


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty result cache for one test (the session's converted model is unaffected)."""
    from pruneviz.core import cache

    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path / "cache"))
    yield cache.results_cache()
    cache.results_cache().close()


@pytest.fixture(autouse=True)
def fixed_seed():
    random.seed(0)
    torch.manual_seed(0)


def tiny_llama(n_blocks: int = 4, hidden_size: int = 32, vocab_size: int = 128, seed: int = 0, context: int = 256):
    """A small random Llama (``LlamaForCausalLM``) in fp32 eval mode, ``context`` positions long."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_blocks,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def byte_tokenizer():
    """A byte-level BPE tokenizer built in code (no download): the 256 bytes, ``" A"`` ... ``" D"`` as single
    tokens (MMLU letter scoring needs them), and ``<|endoftext|>`` (id 0) as end and padding; 261 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    merges = [("Ġ", letter) for letter in "ABCD"]  # Ġ is ByteLevel's space
    vocab.update({a + b: len(vocab) + i for i, (a, b) in enumerate(merges)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A Hugging Face model folder: a random 4-block Llama (d=32, 8,192 positions: MMLU prompts are long in bytes)
    and :func:`byte_tokenizer`; it loads through the same path as any user's folder, in any dtype."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tokenizer = byte_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), context=8192)
    model.config.pad_token_id = model.config.eos_token_id = model.config.bos_token_id = 0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def without_self_check(monkeypatch):
    """Load models without the English self-check, which a random tiny model fails by design (perplexity ~ vocabulary)."""
    from pruneviz.core import loading

    monkeypatch.setattr(loading, "run_self_check", lambda loaded: float("nan"))


@pytest.fixture(scope="session")
def tiny():
    from pruneviz.core.loading import from_modules

    return from_modules("tiny-llama", tiny_llama(), tokenizer=None)


@pytest.fixture(scope="session")
def smollm2():
    from pruneviz.core.loading import load_model

    return load_model("smollm2", device="cpu", dtype="float32")
