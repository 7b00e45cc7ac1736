"""Shared fixtures. Session fixtures are read-only: tests must not modify the models they hand out.

* ``tiny``: a randomly initialised 4-block Llama (d=32, vocab 128) wrapped as a ``LoadedModel`` (no tokenizer).
* ``smollm2``: the real embedded SmolLM2-135M-Instruct (fp32, CPU here), loaded once per session.

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


@pytest.fixture(autouse=True)
def fixed_seed():
    random.seed(0)
    torch.manual_seed(0)


def tiny_llama(n_blocks: int = 4, hidden_size: int = 32, vocab_size: int = 128, seed: int = 0):
    """A small random Llama (``LlamaForCausalLM``) in fp32 eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_blocks,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny():
    from pruneviz.loading import from_modules

    return from_modules("tiny-llama", tiny_llama(), tokenizer=None)


@pytest.fixture(scope="session")
def smollm2():
    from pruneviz.loading import load_model

    return load_model("smollm2", device="cpu")
