"""Benchmark: generation throughput of pruneviz's decoder, batched against one prompt at a time and against
``transformers``' ``generate``, on the same prompts, plan and token limit, side by side in one run.

Ways to decode the same ``--prompts`` HumanEval prompts (the model's own prompt format) greedily for
``--new-tokens`` tokens each, under ``--prune`` (default a plan that spares block 0's attention, where ``generate``'s
cache would read a wrong length, see :mod:`pruneviz.engine.decoding`), no stop sequences, after one warm-up run:

- **batched (B)**: :func:`pruneviz.engine.decoding.generate_requests` with B prompts per batch, for each B of
  ``--batch`` (a comma-separated list, e.g. ``8,16``: how the ratio grows with the batch, side by side);
- **batched (B), padded prefill**: the first B again with the prompts prefilled as one left-padded batch
  (``prefill_alone=False``: a GPU's way) instead of each alone (a CPU's, the default here);
- **one at a time**: the same with batches of one prompt;
- **transformers generate**: ``model.generate`` (greedy, its own DynamicCache) on the same left-padded batches as
  the first batch size, inside the same ``apply_plan``.

Throughput is generated tokens (end-of-sequence excluded) over wall seconds, prompt processing included, also given
as a multiple of one prompt at a time's. The tokens of each way are compared with those of the first batched way.
Each repeat runs the ways in turn, starting one further along each time, so a change in the machine's load hits
all of them alike; results: best of ``--repeats``.

Run: ``.venv/bin/python bench/generation_speed.py [--model qwen2.5-coder-0.5b] [--dtype bfloat16] [--prompts 8] [--batch 8,16]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from pruneviz.core.gating import apply_plan  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.data.generative import generative_items, prompt_format, prompt_ids  # noqa: E402
from pruneviz.engine.decoding import GenerationRequest, end_token_ids, generate_requests  # noqa: E402


def hf_generate(loaded, requests: list[GenerationRequest], batch: int, new_tokens: int) -> list[tuple[int, ...]]:
    """``model.generate`` (greedy) on left-padded batches of ``batch`` prompts; the tokens before the first end token."""
    ends, pad = sorted(end_token_ids(loaded)), loaded.tokenizer.pad_token_id
    order = sorted(range(len(requests)), key=lambda i: (len(requests[i].ids), i))  # as generate_requests batches
    out: dict[int, tuple[int, ...]] = {}
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        width = max(len(requests[i].ids) for i in chunk)
        ids = torch.tensor([[pad] * (width - len(requests[i].ids)) + list(requests[i].ids) for i in chunk])
        mask = torch.tensor([[0] * (width - len(requests[i].ids)) + [1] * len(requests[i].ids) for i in chunk])
        with torch.no_grad():
            generated = loaded.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, eos_token_id=ends,
                pad_token_id=pad, top_p=None, top_k=None, temperature=None,
            )[:, width:]
        for i, row in zip(chunk, generated.tolist()):
            cut = next((k for k, token in enumerate(row) if token in ends), len(row))
            out[i] = tuple(row[:cut])
    return [out[i] for i in range(len(requests))]


def timed(run) -> tuple[float, list[tuple[int, ...]]]:
    started = time.perf_counter()
    tokens = run()
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch", default="8", help="prompts per batch, or a comma-separated list of batch sizes")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prune", default="3.attn,7.mlp")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model, device="cpu", dtype=args.dtype)
    plan = PruningPlan.parse(args.prune, loaded.n_blocks)
    fmt = prompt_format(loaded.tokenizer)
    items = generative_items("humaneval", args.prompts)
    requests = [GenerationRequest(prompt_ids(loaded.tokenizer, item, fmt), args.new_tokens) for item in items]
    sizes = [int(size) for size in args.batch.split(",")]
    def decode(size: int, prefill_alone: bool | None = None) -> list[tuple[int, ...]]:
        return [g.tokens for g in generate_requests(loaded, requests, size, checkpoint=False, prefill_alone=prefill_alone)]

    ways = {f"batched ({size})": (lambda size=size: decode(size)) for size in sizes}
    ways[f"batched ({sizes[0]}), padded prefill"] = lambda: decode(sizes[0], prefill_alone=False)
    ways["one at a time"] = lambda: decode(1)
    ways["transformers generate"] = lambda: hf_generate(loaded, requests, sizes[0], args.new_tokens)
    prompt_tokens = sum(len(r.ids) for r in requests)
    print(f"{args.model} {loaded.dtype_name}, {torch.get_num_threads()} threads, plan '{plan}', {args.prompts} HumanEval "
          f"prompts ({fmt} format, {prompt_tokens} prompt tokens), {args.new_tokens} new tokens each, batches of {args.batch}")
    names = list(ways)
    first = names[0]
    measured = {name: [] for name in ways}
    with apply_plan(plan):
        ways[first]()  # warm-up
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                measured[name].append(timed(ways[name]))
    results = {name: min(runs, key=lambda run: run[0]) for name, runs in measured.items()}
    reference = results[first][1]
    alone = sum(map(len, results["one at a time"][1])) / results["one at a time"][0]  # tokens/s, one prompt at a time
    print(f"{'way':<32}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'x one at a time':>17}{'same tokens as ' + first:>28}")
    for name, (seconds, tokens) in results.items():
        count = sum(map(len, tokens))
        same = sum(a == b for a, b in zip(tokens, reference))
        speed = count / seconds
        print(f"{name:<32}{count:>8}{seconds:>10.1f}{speed:>10.1f}{speed / alone:>16.2f}x{same:>24}/{len(tokens)}")


if __name__ == "__main__":
    main()
