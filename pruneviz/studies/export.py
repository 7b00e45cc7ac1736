"""Export a pruned (and recovered) model.

* Plans that remove only whole blocks (and no recovery) become a plain model directory that stock
  ``transformers`` loads: fewer layers, weights renumbered, every per-layer config list
  (``layer_types``, Qwen2's ``max_window_layers``) kept consistent with the new depth, so the
  attention modules' layer indices, and with them the KV cache, line up.
* Any other plan (sublayers, recovery stand-ins) is written as the full model plus
  ``pruning_plan.json`` (and the stand-ins); :func:`load_exported` rebuilds it for pruneviz.

``pruning_plan.json`` is written in every case.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.cost import plan_cost
from ..core.errors import DataError, SettingError
from ..core.loading import LoadedModel, full_state_dict, load_model
from ..core.plan import PruningPlan
from .recovery import Recovery

PLAN_FILE = "pruning_plan.json"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and saved.

    Attributes:
        directory: where it was written.
        standalone: ``True`` when stock ``transformers`` loads the pruned model as it is.
        blocks_kept: decoder blocks in the exported model (standalone) or in the model the plan applies to.
        params_before / params_after: parameters of the unpruned model and of the pruned one (stand-ins included).
        kv_bytes_per_token_saved: KV-cache bytes per token no longer stored (removed attention sublayers,
            at the model's dtype size).
    """

    directory: Path
    standalone: bool
    blocks_kept: int
    params_before: int
    params_after: int
    kv_bytes_per_token_saved: int


def _layer_key(key: str) -> tuple[int, str] | None:
    match = re.match(r"^model\.layers\.(\d+)\.(.*)$", key)
    return (int(match.group(1)), match.group(2)) if match else None


def block_pruned_state(loaded: LoadedModel, removed: list[int]) -> tuple[dict, dict]:
    """Config dict and state dict of the model without the ``removed`` blocks (renumbered)."""
    kept = [i for i in range(loaded.n_blocks) if i not in set(removed)]
    new_index = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, tensor in full_state_dict(loaded.model).items():
        parsed = _layer_key(key)
        if parsed is None:
            state[key] = tensor
        elif parsed[0] in new_index:
            state[f"model.layers.{new_index[parsed[0]]}.{parsed[1]}"] = tensor
    config = loaded.model.config.to_dict()
    config.pop("quantization_config", None)
    config["num_hidden_layers"] = len(kept)
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = [config["layer_types"][i] for i in kept]
    if isinstance(config.get("max_window_layers"), int):
        # Qwen2: layers with index >= max_window_layers use sliding-window attention
        config["max_window_layers"] = sum(1 for i in kept if i < config["max_window_layers"])
    return config, state


def is_standalone(plan: PruningPlan, with_recovery: bool) -> bool:
    """Whether exporting ``plan`` gives a standalone model that stock ``transformers`` loads: it removes whole
    blocks only (or nothing) and adds no stand-ins; anything else keeps the full weights with the plan beside them."""
    return not with_recovery and all(unit.sublayer is None for unit in plan.units())


def export_model(
    loaded: LoadedModel, plan: PruningPlan, out: str | Path, recovery: Recovery | None = None
) -> ExportReport:
    """Write the pruned model to ``out``.

    Raises:
        SettingError: the plan prunes every block (nothing would be left to export), ``out`` is a
            non-empty directory, or ``recovery`` was fitted for another plan.
        PlanError: the plan names a block the model lacks.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    plan.validate(loaded.n_blocks)
    if recovery is not None and recovery.plan != plan:
        raise SettingError(
            f"The recovery was fitted for plan '{recovery.plan}', not '{plan}'; fit one for this plan or export without it."
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SettingError(f"{out} exists and is not an empty folder; choose a new --out directory.")
    units = plan.units()
    removed_blocks = [u.layer for u in units if u.sublayer is None]
    standalone = is_standalone(plan, recovery is not None)
    if len(removed_blocks) == loaded.n_blocks:
        raise SettingError("The plan prunes every block, which leaves no model to export; keep at least one block.")
    info, cost = loaded.info, plan_cost(loaded.info, plan, loaded.dtype.itemsize)
    added = recovery.added_params if recovery else 0
    out.mkdir(parents=True, exist_ok=True)
    if standalone:
        config_dict, state = block_pruned_state(loaded, removed_blocks)
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
        model.load_state_dict(state)
        model.save_pretrained(out)
    else:
        config = AutoConfig.for_model(**{k: v for k, v in loaded.model.config.to_dict().items() if k != "quantization_config"})
        model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
        model.load_state_dict(full_state_dict(loaded.model))
        model.save_pretrained(out)
        if recovery is not None:
            recovery.save(out / "recovery")
    loaded.tokenizer.save_pretrained(out)
    report = ExportReport(
        out, standalone, loaded.n_blocks - len(removed_blocks), info.params_total,
        info.params_total - cost.params_removed + added, cost.kv_bytes_per_token,
    )
    (out / PLAN_FILE).write_text(json.dumps({
        "source_model": loaded.name, "plan": str(plan), "standalone": standalone,
        "removed_blocks": removed_blocks, "recovery": recovery.label if recovery else None,
        "params_before": report.params_before, "params_after": report.params_after,
        "kv_bytes_per_token_saved": report.kv_bytes_per_token_saved,
    }, indent=2) + "\n")
    return report


def delete_export(directory: str | Path) -> int:
    """Delete an :func:`export_model` directory (it holds a full copy of the weights); return the bytes freed.

    Raises:
        DataError: ``directory`` has no ``pruning_plan.json``, so it is not an export (nothing is deleted).
    """
    directory = Path(directory)
    if not (directory / PLAN_FILE).is_file():
        raise DataError(f"{directory} is not a pruneviz export (no {PLAN_FILE}); nothing was deleted.")
    freed = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    shutil.rmtree(directory)
    return freed


def pending_plan(model: str) -> str | None:
    """The plan an export directory still needs applied (its weights hold the full model), else ``None``.

    ``None`` for anything that is not such a directory (the embedded model, hub ids, standalone exports).
    """
    path = Path(model).expanduser() / PLAN_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return None if meta.get("standalone", True) else meta.get("plan", "")


def exported_plan(directory: str | Path, loaded: LoadedModel) -> tuple[PruningPlan, Recovery | None]:
    """The plan and recovery an export directory still needs applied to ``loaded`` (its weights, loaded).

    For standalone exports the plan is empty and there is no recovery (the blocks are gone from the
    weights). The stand-ins are moved to the model's device.

    Raises:
        DataError: no readable ``pruning_plan.json`` in ``directory``.
        PlanError: the stored plan does not fit ``loaded`` (another model was loaded).
    """
    directory = Path(directory).expanduser()
    try:
        meta = json.loads((directory / PLAN_FILE).read_text())
    except (OSError, ValueError):
        raise DataError(f"{directory} has no readable {PLAN_FILE}; export it with `pruneviz export` first.") from None
    if meta.get("standalone", True):
        return PruningPlan(), None
    recovery = Recovery.load(directory / "recovery", loaded.info.hidden_size, loaded.device) if meta.get("recovery") else None
    return PruningPlan.parse(meta.get("plan", ""), loaded.n_blocks), recovery


def load_exported(
    directory: str | Path, device: str = "auto", dtype: str = "auto"
) -> tuple[LoadedModel, PruningPlan, Recovery | None]:
    """Load an :func:`export_model` directory: the model, the plan still to apply, and its recovery.

    For standalone exports the plan is empty (the blocks are gone from the weights). ``device`` and
    ``dtype`` as :func:`pruneviz.core.loading.load_model` (``"auto"`` loads the weights in the dtype auto picks
    on this machine, whatever dtype they were exported in).

    Raises:
        DataError: no ``pruning_plan.json`` in ``directory``.
    """
    if not (Path(directory).expanduser() / PLAN_FILE).is_file():
        # before the (slow) load: a directory that is no export should fail at once
        raise DataError(f"{directory} has no readable {PLAN_FILE}; export it with `pruneviz export` first.")
    loaded = load_model(str(directory), device=device, dtype=dtype, self_check=False)
    return (loaded, *exported_plan(directory, loaded))
