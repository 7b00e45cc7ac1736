"""Plain-text corpora for calibration and perplexity: the embedded Wikipedia leads or any text file.

Every corpus is split deterministically into a calibration half and an evaluation half by a hash of
each document's title (or text, for files without titles), so a metric computed on calibration texts
is never reported on the same texts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..core.assets import EMBEDDED_DATA
from ..core.cache import file_fingerprint
from ..core.errors import DataError, TooFewSamplesError
from ..core.formatting import shown
from .generative import GENERATIVE_TASKS, TASK_LABEL

SPLITS = ("calibration", "evaluation", "all")
# fields a JSON/JSONL record may hold its text in, in order of preference ("extract": the embedded Wikipedia file)
TEXT_FIELDS = ("text", "extract")
# question tables (MMLU files) that would otherwise be read as plain text without a word
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


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

    @property
    def description(self) -> str:
        """The split in words for messages, e.g. ``"the calibration half of wiki"``."""
        return f"the {self.split} half of {self.name}" if self.split != "all" else self.name


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _count(number: int, noun: str) -> str:
    """``"1 document"``, ``"2 documents"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def did_you_mean_task(name: str) -> str:
    """``", or did you mean humaneval?"`` where a missing file's name is close to a built-in task or its label."""
    names = {"wiki": "wiki", "mmlu": "mmlu", **{task: task for task in GENERATIVE_TASKS},
             **{TASK_LABEL[task].lower().split()[-1]: task for task in GENERATIVE_TASKS}}
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.75)
    return f", or did you mean the built-in task {names[close[0]]}?" if close else ""


def _read_text(path: Path) -> str:
    """The UTF-8 text of a corpus file (a leading byte-order mark is dropped).

    Raises:
        DataError: the file is missing, or is not UTF-8 text (a binary or compressed file, UTF-16 text).
    """
    if not path.is_file():
        raise DataError(f"No text file at {path}; give an existing .txt, .jsonl or .json file{did_you_mean_task(path.name)}.")
    try:
        raw = path.read_text(encoding="utf-8-sig")
        # NUL is valid UTF-8 but never occurs in text: it marks binaries and UTF-16 text that happen to decode
        binary = "\x00" in raw
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise DataError(
            f"{path} is not UTF-8 text (it looks like a binary or compressed file); give a UTF-8 .txt file "
            "(documents separated by blank lines), a .jsonl file or a .json file."
        )
    return raw


def _json_kind(value) -> str:
    """The JSON name of a parsed value's type, for messages: ``"a list"``, ``"a number"``, ``"null"`` ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), "a number")


def _record_text(path: Path, where: str, record) -> str:
    """The text of one JSON/JSONL record: a string, or an object with a string field in :data:`TEXT_FIELDS`.

    Raises:
        DataError: the record is an object without such a field, or neither an object nor a string.
    """
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for field in TEXT_FIELDS:
            if isinstance(record.get(field), str):
                return record[field]
        keys = ", ".join(f"'{key}'" for key in record) or "none"
        raise DataError(
            f"{path} {where} has no text field (its keys: {keys}); give every record a string "
            f"{' or '.join(repr(field) for field in TEXT_FIELDS)} field."
        )
    raise DataError(
        f"{path} {where} is {_json_kind(record)}, not a text or a record; give a string or an object with a "
        f"string {' or '.join(repr(field) for field in TEXT_FIELDS)} field."
    )


def _documents_from_file(path: Path) -> list[tuple[str, str]]:
    """``(key, text)`` pairs from a .txt (blank-line separated), .jsonl (one record a line) or .json file.

    A JSON(L) record is a string or an object with a ``text`` or ``extract`` field; a .json file holds a
    list of records or an object of title -> record. The key (which picks the half) is the title, else the text.
    Other suffixes are read as .txt, except tables (:data:`TABLE_SUFFIXES`), which are refused.

    Raises:
        DataError: a table, a file that is not UTF-8 text, malformed JSON, a record without text, no text at all.
    """
    if path.suffix.lower() in TABLE_SUFFIXES:
        raise DataError(
            f"{path} is a table, not text; give text as .txt (documents separated by blank lines), .jsonl or .json, "
            "and MMLU question tables as the MMLU source (--mmlu-source on the command line)."
        )
    raw = _read_text(path)
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {number} is not valid JSON; fix or remove that line.") from None
            text = _record_text(path, f"line {number}", record)
            docs.append((text, text))
    elif path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); fix the file.") from None
        if isinstance(data, dict):
            docs = [(title, _record_text(path, f"entry '{title}'", record)) for title, record in data.items()]
        elif isinstance(data, list):
            texts = [_record_text(path, f"record {number}", record) for number, record in enumerate(data, start=1)]
            docs = [(text, text) for text in texts]
        else:
            raise DataError(f"{path} holds {_json_kind(data)}; give a JSON list of records or an object of title -> record.")
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
    try:
        fingerprint = file_fingerprint(path) if path.is_file() else ""
    except OSError as error:
        raise DataError(f"The data path '{shown(spec)}' cannot be used ({error.strerror or error}); give a shorter or valid path.") from None
    docs = everything = _load(str(path), fingerprint)
    if split != "all":
        parity = 0 if split == "calibration" else 1
        docs = tuple(doc for doc in docs if _hash(doc[0]) % 2 == parity)
    if not docs:
        raise DataError(
            f"The {split} half of {spec} is empty: a hash of each document's title or text puts it in one half, and all "
            f"{_count(len(everything), 'document')} went to the other; give a file with more documents."
        )
    return TextCorpus(spec, split, tuple(text for _, text in docs), f"{fingerprint}:{split}")


def document_batch(
    tokenizer, texts: tuple[str, ...], samples: int, seq_len: int, source: str, unit: str = "document"
) -> dict[str, torch.Tensor]:
    """Tokenise the first ``samples`` documents, each truncated to ``seq_len`` tokens, right-padded.

    Args:
        source, unit: what ``texts`` are, for the error message (e.g. :attr:`TextCorpus.description` and
            ``"document"``).

    Returns:
        ``{"input_ids": [N, T'], "attention_mask": [N, T']}`` with ``T' <= seq_len`` (1 = real token).

    Raises:
        TooFewSamplesError: fewer than ``samples`` documents.
    """
    if samples > len(texts):
        raise TooFewSamplesError(f"Asked for {samples} samples but {source} has only {_count(len(texts), unit)}; lower --samples.")
    encoded = tokenizer(
        list(texts[:samples]), truncation=True, max_length=seq_len, padding=True, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def bos_prefix(tokenizer) -> int | None:
    """The beginning-of-sequence token id where the tokenizer puts one before every text by default, else ``None``.

    Gemma is such a model and is lost without it (Gemma-3-270M: perplexity 6.4 on a Wikipedia sentence with
    ``<bos>``, 440 without); Llama-style SmolLM2 and Qwen2 tokenizers add none and get none.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids and ids[0] == bos else None


def token_windows(tokenizer, texts: tuple[str, ...], seq_len: int, n_windows: int) -> torch.Tensor:
    """Concatenate documents (separated by a blank line) and cut ``n_windows`` windows of ``seq_len`` tokens.

    Where the tokenizer starts every text with a beginning-of-sequence token (:func:`bos_prefix`), each window
    is that token followed by ``seq_len - 1`` text tokens, as the model saw text in training; either way a
    window scores its ``seq_len - 1`` next-token predictions.

    Returns:
        ``[n_windows, seq_len]`` token ids (no padding).

    Raises:
        DataError: the corpus has too few tokens for the windows.
    """
    prefix = bos_prefix(tokenizer)
    length = seq_len - (prefix is not None)
    needed = n_windows * length
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= needed:
            break
    if len(ids) < needed:
        raise DataError(
            f"The corpus has {len(ids):,} tokens, fewer than {n_windows:,} windows of {length:,}; "
            "lower the number of windows or the sequence length."
        )
    windows = torch.tensor(ids[:needed]).view(n_windows, length)
    if prefix is not None:
        windows = torch.cat([torch.full((n_windows, 1), prefix), windows], dim=1)
    return windows
