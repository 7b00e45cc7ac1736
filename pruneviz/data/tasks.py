"""What a task or dataset spec names: one parse, one canonical spelling and one label for every spec.

A spec is what the CLI's ``--task`` / ``--data`` and the app's pickers take:

* ``wiki`` or a text file (``.txt``, ``.jsonl``, ``.json``, or any other existing file): text, scored by
  perplexity (:mod:`pruneviz.data.text`);
* ``mmlu`` or ``mmlu:<subset>`` (a subject, a category, or a comma list of them): MMLU (:mod:`pruneviz.data.mmlu`);
* ``humaneval``, ``arithmetic`` or ``parens``: a generative task (:mod:`pruneviz.data.generative`);
* anything else, e.g. ``arc_easy`` or a ``.yaml`` file: an lm-evaluation-harness task (the lm-eval backend only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError
from .generative import GENERATIVE_TASKS, TASK_LABEL
from .mmlu import mmlu_subset

TEXT_SUFFIXES = (".txt", ".jsonl", ".json")
YAML_SUFFIXES = (".yaml", ".yml")


def _is_text(spec: str) -> bool:
    path = Path(spec).expanduser()
    try:
        is_file = path.is_file()
    except OSError:  # an over-long name: not an existing file, and read as text by its suffix alone
        is_file = False
    return spec == "wiki" or path.suffix in TEXT_SUFFIXES or (is_file and path.suffix not in YAML_SUFFIXES)


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task or dataset spec (docs/ARCHITECTURE.md, "task spec").

    Attributes:
        spec: the canonical spelling: an MMLU subset spelt one way (``mmlu:Abstract_Algebra`` is
            ``mmlu:abstract algebra``), a generative task in lower case, anything else stripped. Cache keys and
            result tables use it.
        kind: ``"text"``, ``"mmlu"``, ``"generative"`` or ``"lm-eval"``.
        subset: the MMLU subset (``None``: all 57 subjects, or not MMLU).
    """

    spec: str
    kind: str
    subset: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "TaskSpec":
        """Parse a spec.

        Raises:
            DataError: an empty spec; ``mmlu:`` names no subject or category.
        """
        text = spec.strip() if isinstance(spec, str) else ""
        if not text:
            raise DataError(
                "The task or dataset is empty; give wiki, mmlu, mmlu:<subject or category>, humaneval, arithmetic, parens, "
                "a text file or an lm-eval task."
            )
        if text.lower() == "mmlu" or text.lower().startswith("mmlu:"):
            # "MMLU:Anatomy" is MMLU too; the subset, as written, lets the error quote what the user typed
            subset = mmlu_subset(spec.replace(text[:4], "mmlu", 1))
            return cls(f"mmlu:{subset}" if subset else "mmlu", "mmlu", subset)
        if text.lower() in GENERATIVE_TASKS:
            return cls(text.lower(), "generative")
        if text.lower() == "wiki":  # a built-in name, in any case, like mmlu and the generative tasks
            return cls("wiki", "text")
        return cls(text, "text" if _is_text(text) else "lm-eval")

    def require_scoring_data(self) -> "TaskSpec":
        """This spec, where it names text or MMLU prompts that a metric can score token by token.

        Raises:
            DataError: a generative task: it can be evaluated (``evaluate``, curves, trade-offs) but holds no text
                to compute influence metrics on.
        """
        if self.kind == "generative":
            raise DataError(
                f"{self.label} is a generative task: evaluate plans on it; compute influence metrics on wiki, mmlu or a text file."
            )
        return self

    @property
    def is_mmlu(self) -> bool:
        return self.kind == "mmlu"

    @property
    def label(self) -> str:
        """Its name for people: ``"Wikipedia"``, ``"MMLU STEM"``, ``"MMLU all subjects"``, ``"HumanEval"``, a file's
        name, a task's name."""
        if self.spec == "wiki":
            return "Wikipedia"
        if self.kind == "generative":
            return TASK_LABEL[self.spec]
        if self.is_mmlu:
            return f"MMLU {self.subset or 'all subjects'}"
        return Path(self.spec).name if self.kind == "text" else self.spec


def canonical_spec(spec: str) -> str:
    """:attr:`TaskSpec.spec` of ``spec``.

    Raises:
        DataError: as :meth:`TaskSpec.parse`.
    """
    return TaskSpec.parse(spec).spec
