"""Plain-text corpora for calibration and perplexity: the embedded Wikipedia leads or any text file.

Every corpus is split deterministically into a calibration half and an evaluation half by a hash of
each document's title (or text, for files without titles), so a metric computed on calibration texts
is never reported on the same texts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..assets import EMBEDDED_DATA
from ..cache import file_fingerprint
from ..errors import DataError

SPLITS = ("calibration", "evaluation", "all")


@dataclass(frozen=True)
class TextCorpus:
    """Documents of one corpus split.

    Attributes:
        name: ``"wiki"`` or the file path.
        split: ``"calibration"``, ``"evaluation"`` or ``"all"``.
        texts: the documents, in a fixed (hash) order.
        fingerprint: digest of source and split, for cache keys.
    """

    name: str
    split: str
    texts: tuple[str, ...]
    fingerprint: str

    @property
    def label(self) -> str:
        """Human label, e.g. ``"wiki (evaluation half)"``."""
        return f"{self.name} ({self.split} half)" if self.split != "all" else self.name


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _documents_from_file(path: Path) -> list[tuple[str, str]]:
    """``(key, text)`` pairs from a .txt (blank-line separated), .jsonl (``text`` field) or .json file."""
    if not path.is_file():
        raise DataError(f"No text file at {path}; give an existing .txt, .jsonl or .json file.")
    raw = path.read_text(errors="replace")
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {number} is not valid JSON; fix or remove that line.") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path} line {number} has no string 'text' field; each line needs {{\"text\": ...}}.")
            docs.append((record["text"], record["text"]))
    elif path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); fix the file.") from None
        if isinstance(data, dict):
            docs = [(title, v.get("extract", "") if isinstance(v, dict) else str(v)) for title, v in data.items()]
        elif isinstance(data, list) and all(isinstance(t, str) for t in data):
            docs = [(t, t) for t in data]
        else:
            raise DataError(f"{path} must be a JSON list of strings or an object of title -> text.")
    else:
        docs = [(p.strip(), p.strip()) for p in raw.split("\n\n")]
    docs = [(key, text) for key, text in docs if text and text.strip()]
    if not docs:
        raise DataError(f"{path} contains no text; give a file with at least one non-empty document.")
    return docs


@lru_cache(maxsize=8)
def _load(source: str, fingerprint: str) -> tuple[tuple[str, str], ...]:
    docs = _documents_from_file(Path(source))
    return tuple(sorted(docs, key=lambda doc: _hash(doc[0])))


def load_corpus(spec: str = "wiki", split: str = "evaluation") -> TextCorpus:
    """Load a corpus split.

    Args:
        spec: ``"wiki"`` (embedded Wikipedia leads) or a path to a .txt/.jsonl/.json file.
        split: ``"calibration"`` (documents with an even title hash), ``"evaluation"`` (odd) or ``"all"``.

    Raises:
        DataError: missing/empty/malformed file (names the line), unknown split, or an empty half.
    """
    if split not in SPLITS:
        raise DataError(f"Split '{split}' is unknown; use one of {', '.join(SPLITS)}.")
    path = EMBEDDED_DATA["wiki"].path() if spec == "wiki" else Path(spec)
    fingerprint = file_fingerprint(path) if path.is_file() else ""
    docs = _load(str(path), fingerprint)
    if split != "all":
        parity = 0 if split == "calibration" else 1
        docs = tuple(doc for doc in docs if _hash(doc[0]) % 2 == parity)
    if not docs:
        raise DataError(f"The {split} half of {spec} is empty; give a file with more documents or use split 'all'.")
    return TextCorpus(spec, split, tuple(text for _, text in docs), f"{fingerprint}:{split}")


def document_batch(tokenizer, texts: tuple[str, ...], samples: int, seq_len: int) -> dict[str, torch.Tensor]:
    """Tokenise the first ``samples`` documents, each truncated to ``seq_len`` tokens, right-padded.

    Returns:
        ``{"input_ids": [N, T'], "attention_mask": [N, T']}`` with ``T' <= seq_len`` (1 = real token).

    Raises:
        DataError: fewer than ``samples`` documents.
    """
    if samples > len(texts):
        raise DataError(f"Asked for {samples} samples but the corpus has {len(texts)} documents; lower --samples.")
    encoded = tokenizer(
        list(texts[:samples]), truncation=True, max_length=seq_len, padding=True, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def token_windows(tokenizer, texts: tuple[str, ...], seq_len: int, n_windows: int) -> torch.Tensor:
    """Concatenate documents (separated by a blank line) and cut ``n_windows`` windows of ``seq_len`` tokens.

    Returns:
        ``[n_windows, seq_len]`` token ids (no padding).

    Raises:
        DataError: the corpus has fewer than ``n_windows * seq_len`` tokens.
    """
    needed = n_windows * seq_len
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= needed:
            break
    if len(ids) < needed:
        raise DataError(
            f"The corpus has {len(ids)} tokens, fewer than {n_windows} windows of {seq_len}; "
            "lower the number of windows or the sequence length."
        )
    return torch.tensor(ids[:needed]).view(n_windows, seq_len)
