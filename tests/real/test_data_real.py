"""Token windows and document batches with the embedded model's tokenizer."""

from __future__ import annotations

import pytest

from pruneviz.core.errors import DataError
from pruneviz.data.text import document_batch, load_corpus, token_windows


@pytest.mark.real
def test_token_windows_and_document_batch_real(smollm2):
    texts = load_corpus("wiki", "evaluation").texts
    windows = token_windows(smollm2.tokenizer, texts, seq_len=64, n_windows=5)
    assert windows.shape == (5, 64)
    joined = smollm2.tokenizer(texts[0] + "\n\n", add_special_tokens=False)["input_ids"]
    assert windows.flatten()[: min(len(joined), 64)].tolist() == joined[:64]
    short = ("One.", "Two words here.", "A rather longer sentence with several more tokens in it.")
    batch = document_batch(smollm2.tokenizer, short, 3, 8, "three sentences")
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[1] == 8
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[0] < lengths[1] < lengths[2] == 8
    assert batch["attention_mask"][0, : lengths[0]].all() and not batch["attention_mask"][0, lengths[0]:].any()
    with pytest.raises(DataError, match="but three sentences has only 3 documents; lower --samples"):
        document_batch(smollm2.tokenizer, short, 4, 8, "three sentences")
