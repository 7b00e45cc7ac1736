"""How the app is deployed: a laptop (everything allowed) or a shared demo server (configured choices, bounded work).

Demo mode is on when the environment has ``PRUNEVIZ_DEMO=1``, when the app is started with
``streamlit run app.py -- --demo``, or when the TOML file named by ``PRUNEVIZ_CONFIG`` says
``demo = true``. That file may also list the models and datasets a visitor can pick and the limits
on the work one request may ask for::

    demo = true
    models = ["smollm2"]                 # aliases, model directories or .gguf files
    datasets = ["wiki", "mmlu"]          # "wiki", "mmlu", "mmlu:<category>", or text files
    device = "auto"
    dtype = "auto"

    [limits]
    seq_len = 256                        # tokens per sequence or window
    samples = 32                         # calibration sequences / evaluation windows
    per_subject = 10                     # MMLU questions per subject
    new_tokens = 64                      # generated tokens
    budget = 32                          # Shapley subnetworks / permutation pairs
    steps = 50                           # recovery training steps

In demo mode a visitor types no path (models and data come from these lists), cannot enable
``trust_remote_code``, and every count is capped by ``[limits]``. Outside demo mode the limits are
not applied. The module also reports and frees the memory the server holds (:func:`memory_usage`,
:func:`release_memory`), which the app's sidebar shows.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .core.errors import SettingError
from .data.mmlu import is_mmlu

DEMO_ENV = "PRUNEVIZ_DEMO"
CONFIG_ENV = "PRUNEVIZ_CONFIG"
DEMO_FLAG = "--demo"
# what a visitor of a demo may pick when the configuration file names nothing
DEFAULT_MODELS = ("smollm2",)
DEFAULT_DATASETS = ("wiki", "mmlu")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Limits:
    """The most one request may ask for in demo mode (counts; ``seq_len`` and ``new_tokens`` in tokens).

    The defaults keep one request on the embedded 135M model within about a minute on 2 CPU cores.
    """

    seq_len: int = 256
    samples: int = 32
    per_subject: int = 10
    new_tokens: int = 64
    budget: int = 32
    steps: int = 50


@dataclass(frozen=True)
class Deployment:
    """The app's deployment settings.

    Attributes:
        demo: shared demo mode (configured choices only, bounded work, no remote code).
        models: model specs offered in demo mode (the first is the default).
        datasets: datasets offered in demo mode (``wiki``, ``mmlu``, ``mmlu:<category>`` or text files).
        device, dtype: what demo mode loads models with (no picker is shown).
        limits: caps on counts and lengths, applied in demo mode only.
    """

    demo: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    device: str = "auto"
    dtype: str = "auto"
    limits: Limits = field(default_factory=Limits)

    def cap(self, name: str, maximum: int) -> int:
        """The largest value a picker for ``name`` (a :class:`Limits` field) may offer: ``maximum``, capped in demo mode.

        Raises:
            SettingError: ``name`` is not a limit.
        """
        if name not in LIMIT_NAMES:
            raise SettingError(f"'{name}' is not a deployment limit; use one of {', '.join(LIMIT_NAMES)}.")
        return min(maximum, getattr(self.limits, name)) if self.demo else maximum

    def offers_dataset(self, data: str) -> bool:
        """Whether a visitor may use ``data`` (always outside demo mode; in demo mode: configured, or an MMLU subset of configured ``mmlu``)."""
        if not self.demo or data in self.datasets:
            return True
        return is_mmlu(data) and "mmlu" in self.datasets


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(f"{where} must be a whole number of at least 1 (got {value!r}); fix the configuration file.")
    return value


def _string_list(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SettingError(f"{where} must be a non-empty list of strings (got {value!r}); fix the configuration file.")
    return tuple(v.strip() for v in value)


def read_config(path: Path) -> dict:
    """Parse a deployment TOML file (format in the module docstring).

    Raises:
        SettingError: the file is missing, unreadable, not TOML, or has unknown keys or bad values.
    """
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise SettingError(f"Cannot read the configuration file {path} ({error.strerror}); fix {CONFIG_ENV}.") from error
    except tomllib.TOMLDecodeError as error:
        raise SettingError(f"The configuration file {path} is not valid TOML ({error}); fix it.") from error
    known = {"demo", "models", "datasets", "device", "dtype", "limits"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise SettingError(f"Unknown key '{unknown[0]}' in {path}; use {', '.join(sorted(known))}.")
    settings: dict = {}
    if "demo" in document:
        if not isinstance(document["demo"], bool):
            raise SettingError(f"'demo' in {path} must be true or false (got {document['demo']!r}).")
        settings["demo"] = document["demo"]
    for key in ("models", "datasets"):
        if key in document:
            settings[key] = _string_list(document[key], f"'{key}' in {path}")
    for key in ("device", "dtype"):
        if key in document:
            settings[key] = _string_list([document[key]], f"'{key}' in {path}")[0]
    limits = document.get("limits", {})
    if not isinstance(limits, dict):
        raise SettingError(f"'limits' in {path} must be a table ([limits]).")
    bad = sorted(set(limits) - set(LIMIT_NAMES))
    if bad:
        raise SettingError(f"Unknown limit '{bad[0]}' in {path}; use {', '.join(LIMIT_NAMES)}.")
    settings["limits"] = Limits(**{k: _positive_int(v, f"limits.{k} in {path}") for k, v in limits.items()})
    return settings


def load_deployment(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> Deployment:
    """The deployment described by the environment, the command line and the configuration file.

    Args:
        environ: environment variables (default ``os.environ``): ``PRUNEVIZ_DEMO`` (``1``/``true`` turns
            demo mode on, ``0``/``false`` off, overriding the file) and ``PRUNEVIZ_CONFIG`` (a TOML file).
        argv: the command line (default ``sys.argv``); ``--demo`` turns demo mode on
            (``streamlit run app.py -- --demo``).

    Raises:
        SettingError: see :func:`read_config`.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    settings = read_config(Path(environ[CONFIG_ENV]).expanduser()) if environ.get(CONFIG_ENV) else {}
    flag = environ.get(DEMO_ENV, "").strip().lower()
    if flag:
        settings["demo"] = flag in TRUE_WORDS
    if DEMO_FLAG in argv:
        settings["demo"] = True
    return Deployment(**settings)


def process_rss_bytes() -> int:
    """Resident memory of this process in bytes (``/proc/self/statm`` on Linux; elsewhere the peak from ``getrusage``)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # getrusage reports kibibytes on Linux and bytes on macOS
    return peak if sys.platform == "darwin" else peak * 1024


def memory_usage() -> dict[str, int]:
    """Memory this server holds, in bytes.

    Returns:
        ``{"rss": ...}`` plus, when CUDA is available, ``"cuda_allocated"`` (tensors alive) and
        ``"cuda_reserved"`` (held by PyTorch's caching allocator), summed over visible devices.
    """
    usage = {"rss": process_rss_bytes()}
    if torch.cuda.is_available():
        devices = range(torch.cuda.device_count())
        usage["cuda_allocated"] = sum(torch.cuda.memory_allocated(d) for d in devices)
        usage["cuda_reserved"] = sum(torch.cuda.memory_reserved(d) for d in devices)
    return usage


def release_memory() -> None:
    """Return freed memory: collect unreachable objects (a dropped model's tensors) and empty CUDA's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
