"""Cheap recovery for pruned units: stand-ins that replace a removed update f(x).

Siddiqui et al. (2024, §5) replace a pruned unit's update by a cheap function of its residual-stream
input x (``resid_pre`` for a block or attn unit, ``resid_mid`` for an mlp unit):

* ``bias``     - update = b, the mean of f(x) over calibration tokens (d parameters);
* ``lowrank``  - update = x A B + b with A [d, r], B [r, d]: reduced-rank regression (2dr + d parameters);

and, for comparison on the same plan and data, two published training-free alternatives:

* ``linear``   - update = x M, one full d x d least-squares map with a ridge term, no bias: the linear
  transform ReplaceMe (Shopkhoev et al. 2025) folds into the preceding block's output projection
  (ReplaceMe fits one map per pruned *span*; here each pruned unit gets its own, fitted in order);
* ``rescale``  - update = x * s, a per-channel rescaling that closes the magnitude gap left by the
  removal (the diagonal variant of LinearPatch; Prune&Comp's magnitude compensation).

Fits: ``emulate`` solves least squares against the unit's real update on calibration activations in
closed form (reduced-rank regression: OLS, then projection onto the top-r principal directions of the
fitted values); inputs come from the pruned model as it runs (sequential: a stand-in sees the
effects of earlier ones) or, optionally, from the unpruned model. ``train`` starts from the emulated
parameters and minimises the end-to-end LM loss on calibration text by Adam, everything else frozen,
with early stopping on a held-out part of the calibration documents.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.cache import drop_partial, read_partial, write_partial
from ..core.cost import plan_cost
from ..core.digest import tensor_digest
from ..core.errors import DataError, SettingError
from ..core.gating import STAND_IN_INPUT, apply_plan, record_residuals
from ..core.plan import PruningPlan, Unit
from ..core.progress import Progress

METHODS = ("bias", "lowrank", "linear", "rescale")
FITS = ("emulate", "train")
# least-squares stand-ins (lowrank, linear) fitted on fewer calibration tokens than a few times the hidden size d
# memorise them: bench/recovery_defaults.py on SmolLM2 (d = 576, 7 attention sublayers pruned, perplexity paired over
# 8 windows) measured lowrank +20 % (95 % CI +15 to +26 %) and linear +194 % against no stand-in at 0.9 tokens per d,
# and -10 % (-14 to -6 %) and -10 % (-14 to -5 %) at 7.1 tokens per d, where a bias helped by -9 %
TOKENS_PER_DIMENSION = 4
LEAST_SQUARES_METHODS = ("lowrank", "linear")


def default_calibration_documents(hidden_size: int, seq_len: int = 128) -> int:
    """Calibration documents of ``seq_len`` tokens for the default fit: at least :data:`TOKENS_PER_DIMENSION` × d
    tokens, and at least 32 documents."""
    return max(32, math.ceil(TOKENS_PER_DIMENSION * hidden_size / seq_len))


def too_few_calibration_tokens(method: str, tokens: int, hidden_size: int) -> str | None:
    """A warning sentence when ``method`` fits least squares on fewer than :data:`TOKENS_PER_DIMENSION` × d tokens, else None."""
    needed = TOKENS_PER_DIMENSION * hidden_size
    if method not in LEAST_SQUARES_METHODS or tokens >= needed:
        return None
    return (
        f"{tokens:,} calibration tokens are fewer than {TOKENS_PER_DIMENSION} × d = {needed:,}: a {method} stand-in fitted "
        "on them tends to memorise them and can make the pruned model worse than no stand-in (measured on SmolLM2: "
        "+20 % perplexity at 0.9 tokens per d, -10 % at 7.1). Use more documents or longer ones, or the bias method."
    )


class StandIn(nn.Module):
    """A stand-in update ``u(x) = x A B + x * s + b`` of which each method uses a subset.

    Args:
        method: one of :data:`METHODS`.
        d: residual-stream width.
        rank: r for ``lowrank``.

    Shapes: ``forward(x [..., d]) -> [..., d]``; computed in fp32 and returned in x's dtype.
    """

    def __init__(self, method: str, d: int, rank: int = 0):
        super().__init__()
        self.method = method
        self.bias = nn.Parameter(torch.zeros(d)) if method in ("bias", "lowrank") else None
        self.down = nn.Parameter(torch.zeros(d, rank)) if method == "lowrank" else None
        self.up = nn.Parameter(torch.zeros(rank, d)) if method == "lowrank" else None
        self.matrix = nn.Parameter(torch.zeros(d, d)) if method == "linear" else None
        self.scale = nn.Parameter(torch.zeros(d)) if method == "rescale" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        out = torch.zeros_like(h)
        if self.down is not None:
            out = out + (h @ self.down) @ self.up
        if self.matrix is not None:
            out = out + h @ self.matrix
        if self.scale is not None:
            out = out + h * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype)

    def param_count(self) -> int:
        """Parameters this stand-in adds to the model."""
        return sum(p.numel() for p in self.parameters())


class _Moments:
    """Streaming sufficient statistics of (x, y) pairs in fp64: n, sums, X^T X, X^T Y."""

    def __init__(self, d: int):
        self.n = 0
        self.sx = torch.zeros(d, dtype=torch.float64)
        self.sy = torch.zeros(d, dtype=torch.float64)
        self.xx = torch.zeros(d, d, dtype=torch.float64)
        self.xy = torch.zeros(d, d, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double().cpu(), y.double().cpu()
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y


def fit_closed_form(moments: _Moments, method: str, rank: int = 0, ridge: float = 1e-4) -> StandIn:
    """Least-squares stand-in from moments of inputs x and target updates y = f(x).

    Args:
        method: ``bias`` (b = mean y), ``lowrank`` (reduced-rank regression with intercept),
            ``linear`` (ridge least squares without intercept), ``rescale`` (per-channel least squares).
        rank: r for ``lowrank`` (``r = d`` gives ordinary least squares).
        ridge: ridge term relative to the mean input variance (``lowrank``, ``linear``); 0 = none.

    Raises:
        SettingError: unknown method or rank outside 1..d.
    """
    d = moments.sx.numel()
    n = moments.n
    stand_in = StandIn(method, d, rank)
    mean_x, mean_y = moments.sx / n, moments.sy / n
    with torch.no_grad():
        if method == "bias":
            stand_in.bias.copy_(mean_y)
        elif method == "rescale":
            stand_in.scale.copy_(moments.xy.diagonal() / moments.xx.diagonal().clamp_min(1e-30))
        elif method == "linear":
            lam = ridge * moments.xx.trace() / d
            stand_in.matrix.copy_(torch.linalg.solve(moments.xx + lam * torch.eye(d, dtype=torch.float64), moments.xy))
        elif method == "lowrank":
            if not 1 <= rank <= d:
                raise SettingError(f"Rank {rank} is outside 1-{d} for this model; pick a rank in range.")
            cxx = moments.xx / n - torch.outer(mean_x, mean_x)
            cxy = moments.xy / n - torch.outer(mean_x, mean_y)
            lam = ridge * cxx.trace() / d
            ols = torch.linalg.solve(cxx + lam * torch.eye(d, dtype=torch.float64), cxy)  # [d, d]
            # principal directions of the fitted values X W: eigenvectors of W^T Cxx W
            _, vectors = torch.linalg.eigh(ols.T @ cxx @ ols)
            top = vectors[:, -rank:]  # [d, r]
            stand_in.down.copy_(ols @ top)
            stand_in.up.copy_(top.T)
            stand_in.bias.copy_(mean_y - mean_x @ ols @ top @ top.T)
        else:
            raise SettingError(f"Recovery method '{method}' is unknown; use one of {', '.join(METHODS)}.")
    return stand_in


def slot_of(unit: Unit) -> tuple[int, str]:
    """Where a unit's stand-in sits: ``(layer, "attn")`` for blocks and attn units, ``(layer, "mlp")`` for mlp."""
    return unit.layer, "mlp" if unit.sublayer == "mlp" else "attn"


def _endpoints(unit: Unit) -> tuple[str, str]:
    x_name = STAND_IN_INPUT[slot_of(unit)[1]]
    y_name = "resid_mid" if unit.sublayer == "attn" else "resid_post"
    return x_name, y_name


@dataclass
class Recovery:
    """Fitted stand-ins for the units of one plan.

    Attributes:
        plan: the pruning plan they recover.
        method / rank / fit: how they were made.
        stand_ins: ``{(layer, "attn"|"mlp"): StandIn}`` as :func:`pruneviz.core.gating.apply_plan` takes them.
        removed_params: parameters the plan removes.
        calibration: label of the data the stand-ins were fitted on.
        seconds: fitting wall time.
        history: ``train`` only: held-out LM loss (nats/token) after each evaluation step.
        resumed_from: ``train`` only: the step an interrupted earlier fit had saved, from which this one went
            on (0: it started afresh).
    """

    plan: PruningPlan
    method: str
    rank: int
    fit: str
    stand_ins: dict[tuple[int, str], StandIn]
    removed_params: int
    calibration: str
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def added_params(self) -> int:
        """Parameters the stand-ins add."""
        return sum(s.param_count() for s in self.stand_ins.values())

    @property
    def added_percent(self) -> float:
        """Added parameters as % of the removed units' parameters."""
        return 100.0 * self.added_params / self.removed_params if self.removed_params else 0.0

    @property
    def label(self) -> str:
        """E.g. ``"lowrank-8/emulate"``."""
        return f"{self.method}{'-' + str(self.rank) if self.method == 'lowrank' else ''}/{self.fit}"

    @property
    def training_failed(self) -> bool:
        """``train`` only: no held-out evaluation beat the closed-form start, so the kept stand-ins are the
        ``emulate`` ones (a learning rate too high diverges this way)."""
        return self.fit == "train" and len(self.history) > 1 and min(self.history[1:]) >= self.history[0]

    @property
    def fingerprint(self) -> str:
        """Digest of every parameter: equal stand-ins share it (the app saves a refit of the same settings once)."""
        tensors = [(f"{layer}.{slot}.{name}", tensor) for (layer, slot), module in sorted(self.stand_ins.items())
                   for name, tensor in module.state_dict().items()]
        return tensor_digest(tensors, prefix=f"{self.plan}|{self.label}")

    def save(self, directory: str | Path) -> Path:
        """Write ``stand_ins.safetensors`` and ``recovery.json`` into ``directory``; returns it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{layer}.{slot}.{name}": tensor.detach().float().cpu().contiguous()
            for (layer, slot), module in self.stand_ins.items()
            for name, tensor in module.state_dict().items()
        }
        save_file(tensors, str(directory / "stand_ins.safetensors"))
        meta = {
            "plan": str(self.plan), "method": self.method, "rank": self.rank, "fit": self.fit,
            "removed_params": self.removed_params, "added_params": self.added_params,
            "calibration": self.calibration, "seconds": self.seconds, "history": self.history,
        }
        (directory / "recovery.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, d: int, device: torch.device | str | None = None) -> "Recovery":
        """Read a :meth:`save`d recovery; its stand-ins go to ``device`` (default: CPU).

        Raises:
            DataError: the path is a model (see :func:`refuse_model_as_recovery`), is missing, is a file,
                lacks ``recovery.json``, holds damaged files, or stand-ins that do not fit a model of width ``d``.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        refuse_model_as_recovery(directory)
        if not directory.exists():
            raise DataError(
                f"There is no recovery at {directory}; give the folder `python -m pruneviz recover --out` wrote, "
                "or fit one into a new folder with it."
            )
        if not directory.is_dir():
            raise DataError(f"{directory} is a file, not a recovery folder; give the folder `python -m pruneviz recover --out` wrote.")
        if not (directory / "recovery.json").is_file():
            raise DataError(
                f"{directory} holds no recovery.json, so it is not a saved recovery; give the folder that "
                "`python -m pruneviz recover --out` wrote."
            )
        try:
            meta = json.loads((directory / "recovery.json").read_text())
            tensors = load_file(str(directory / "stand_ins.safetensors"))
            missing = [key for key in RECOVERY_KEYS if key not in meta]
            if missing:
                raise ValueError(f"recovery.json lacks {', '.join(missing)}")
        except (OSError, ValueError, AttributeError, TypeError, SafetensorError) as error:
            raise DataError(
                f"The recovery in {directory} is damaged ({error}); fit it again with `python -m pruneviz recover --out` "
                "into a new folder."
            ) from None
        stand_ins: dict[tuple[int, str], StandIn] = {}
        for key in sorted({k.rsplit(".", 1)[0] for k in tensors}):
            layer, slot = key.split(".")
            module = StandIn(meta["method"], d, meta["rank"])
            try:
                module.load_state_dict({k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.rsplit(".", 1)[0] == key})
            except RuntimeError:
                raise DataError(f"{directory} holds stand-ins for another model width; refit them for this model.") from None
            stand_ins[(int(layer), slot)] = module.to(device) if device is not None else module
        return cls(PruningPlan.parse(meta["plan"]), meta["method"], meta["rank"], meta["fit"], stand_ins,
                   meta["removed_params"], meta["calibration"], meta.get("seconds", 0.0), meta.get("history", []))


# what recovery.json must hold (Recovery.save writes them all)
RECOVERY_KEYS = ("plan", "method", "rank", "fit", "removed_params", "calibration")


def refuse_model_as_recovery(path: str | Path) -> None:
    """Refuse a model given where a saved recovery is expected (the "not a saved recovery" advice, to run
    ``recover --out`` into that path, would be wrong for it).

    Raises:
        DataError: ``path`` is a model folder (it holds ``config.json``) or a ``.gguf`` file.
    """
    path = Path(path)
    if (path / "config.json").is_file() or (path.is_file() and path.suffix == ".gguf"):
        raise DataError(
            f"{path} is a model, not a saved recovery; give it as the model, and as the recovery the folder "
            "`python -m pruneviz recover --out` wrote."
        )


def _capture_moments(loaded, batch, unit: Unit, plan: PruningPlan, stand_ins: dict, batch_size: int) -> _Moments:
    """Moments of (x, f(x)) of ``unit`` over real tokens, with ``plan`` (minus the unit) and ``stand_ins`` applied."""
    x_name, y_name = _endpoints(unit)
    moments = _Moments(loaded.info.hidden_size)
    live = PruningPlan(plan.pruned - set(unit.sublayers()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for start in range(0, len(ids), batch_size):
        part_mask = mask[start : start + batch_size].bool()
        seen: dict[str, torch.Tensor] = {}

        def keep(layer: int, name: str, tensor: torch.Tensor) -> None:
            if layer == unit.layer:
                seen[name] = tensor[part_mask.to(tensor.device)]

        with torch.no_grad(), apply_plan(live, stand_ins), record_residuals(keep):
            loaded.hidden_states(ids[start : start + batch_size], mask[start : start + batch_size])
        moments.add(seen[x_name], seen[y_name] - seen[x_name])
    return moments


def fit_recovery(
    loaded,
    plan: PruningPlan,
    batch: dict[str, torch.Tensor],
    method: str = "lowrank",
    rank: int = 8,
    fit: str = "emulate",
    inputs: str = "pruned",
    calibration: str = "",
    ridge: float = 1e-4,
    heldout: dict[str, torch.Tensor] | None = None,
    steps: int = 100,
    learning_rate: float = 1e-3,
    patience: int = 3,
    batch_size: int = 8,
    progress: Progress | None = None,
    checkpoint: str | None = None,
) -> Recovery:
    """Fit stand-ins for every unit of ``plan``.

    Args:
        batch: calibration tokens ``{"input_ids": [N, T], "attention_mask": [N, T]}``.
        method: one of :data:`METHODS`; rank: r of ``lowrank``.
        fit: ``emulate`` (closed-form least squares) or ``train`` (emulate, then Adam on the LM loss).
        inputs: ``pruned`` (sequential: a unit's inputs come from the model with earlier stand-ins) or
            ``unpruned`` (every unit's inputs from the full model).
        heldout: ``train`` only: documents for early stopping (required for ``train``).
        steps: ``train``: most optimiser steps (one batch each); evaluation every ``max(1, steps // 10)``.
        patience: ``train``: stop after this many evaluations without improvement (best parameters kept).
        progress: ``progress(done, total)``; may raise ``Cancelled``.
        checkpoint: ``train``: a cache key under which training saves its state at every held-out
            evaluation, so that a cancelled or interrupted fit resumes from there (``None``: no checkpoints).

    Raises:
        SettingError: empty plan, unknown method/fit/inputs, bad rank, ``train`` without ``heldout`` or with a
            learning rate that is not a positive number.
    """
    if not len(plan):
        raise SettingError("The plan prunes nothing, so there is nothing to recover; prune a unit first.")
    if fit not in FITS or inputs not in ("pruned", "unpruned"):
        raise SettingError(f"Use fit emulate or train and inputs pruned or unpruned (got {fit}, {inputs}).")
    if fit == "train" and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise SettingError(f"The learning rate must be a positive number (got {learning_rate}); try 1e-3.")
    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    units = plan.units()
    stand_ins: dict[tuple[int, str], StandIn] = {}
    total = len(units) + (steps if fit == "train" else 0)
    for index, unit in enumerate(units):
        earlier = stand_ins if inputs == "pruned" else {}
        context = plan if inputs == "pruned" else PruningPlan()
        moments = _capture_moments(loaded, batch, unit, context, earlier, batch_size)
        stand_ins[slot_of(unit)] = fit_closed_form(moments, method, rank, ridge).to(loaded.device)
        if progress:
            progress(index + 1, total)
    removed = plan_cost(loaded.info, plan, loaded.dtype.itemsize).params_removed
    recovery = Recovery(plan, method, rank if method == "lowrank" else 0, fit, stand_ins, removed, calibration)
    if fit == "train":
        if heldout is None:
            raise SettingError("Training stand-ins needs held-out documents for early stopping.")
        recovery.history, recovery.resumed_from = _train(loaded, recovery, batch, heldout, steps, learning_rate, patience, batch_size,
                                  lambda done: progress(len(units) + done, total) if progress else None, checkpoint)
    recovery.seconds = time.perf_counter() - started
    return recovery


def lm_loss(loaded, plan: PruningPlan, stand_ins: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) over real tokens, differentiable in the stand-ins."""
    with apply_plan(plan, stand_ins):
        hidden = loaded.hidden_states(ids, mask)
    logits = loaded.logits(hidden[:, :-1])
    labels = ids[:, 1:].to(logits.device).masked_fill(mask[:, 1:].to(logits.device) == 0, -100)
    return nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)


def _train(
    loaded, recovery: Recovery, batch, heldout, steps, learning_rate, patience, batch_size, tick, checkpoint
) -> tuple[list[float], int]:
    """Adam on the LM loss of the stand-ins only; returns the held-out losses and the step it resumed from (0:
    none); keeps the best parameters.

    With a ``checkpoint`` key the whole state (step, parameters, optimiser moments, best parameters,
    history) is saved at every held-out evaluation and restored on the next call, so training resumes
    where it stopped and ends exactly as an uninterrupted run would.
    """
    parameters = [p for s in recovery.stand_ins.values() for p in s.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def heldout_loss() -> float:
        with torch.no_grad():
            return lm_loss(loaded, recovery.plan, recovery.stand_ins, heldout["input_ids"], heldout["attention_mask"]).item()

    saved = read_partial(checkpoint) if checkpoint else None
    if saved is None:
        history, first = [heldout_loss()], 1
        best = [p.detach().clone() for p in parameters]
        stale = 0
    else:
        with torch.no_grad():
            for parameter, value in zip(parameters, saved["parameters"]):
                parameter.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        history, best, stale, first = saved["history"], saved["best"], saved["stale"], saved["step"] + 1
        tick(saved["step"])
    every = max(1, steps // 10)
    for step in range(first, steps + 1):
        start = ((step - 1) * batch_size) % len(ids)
        optimizer.zero_grad()
        loss = lm_loss(loaded, recovery.plan, recovery.stand_ins, ids[start : start + batch_size], mask[start : start + batch_size])
        if not math.isfinite(loss.item()):
            break
        loss.backward()
        optimizer.step()
        if step % every == 0:
            history.append(heldout_loss())
            if history[-1] < min(history[:-1]):
                best, stale = [p.detach().clone() for p in parameters], 0
            else:
                stale += 1
            if checkpoint:
                write_partial(checkpoint, {
                    "step": step, "parameters": [p.detach().clone() for p in parameters], "optimizer": optimizer.state_dict(),
                    "best": best, "stale": stale, "history": history,
                })
            if stale >= patience:
                break
        tick(step)
    with torch.no_grad():
        for parameter, value in zip(parameters, best):
            parameter.copy_(value)
    if checkpoint:
        drop_partial(checkpoint)
    return history, first - 1
