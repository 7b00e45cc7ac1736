"""pruneviz landing page: start on the prune page, see how the pages fit together, the model's architecture, and what depth pruning is.

Run with ``streamlit run app.py``: this file names every page for the sidebar (``st.navigation``; the landing page is
"Start") and runs the one chosen; each page under ``pages/`` draws itself.
"""

import streamlit as st

from pruneviz import ui

INTRO = """
**Depth pruning** removes whole pieces of a decoder-only language model's depth instead of
thinning every matrix. A model is a stack of **blocks** (decoder layers). Each block holds two
**sublayers**, each with its own pre-norm: **self-attention** (`attn`), which mixes information
between token positions, and the feed-forward network (`mlp`), which transforms each position on
its own. Both *add* their output to the **residual stream**:

```
resid_mid  = resid_pre + attn_out
resid_post = resid_mid + mlp_out      (resid_post of block i = resid_pre of block i + 1)
```

so a pruned unit simply adds nothing, and the stream flows on. A **unit** is what can be pruned:
a whole block (`12`), or one sublayer (`12.attn`, `12.mlp`). Pruning attention sublayers also
removes their KV cache; pruning MLP sublayers removes most of the parameters.

Which units to remove is decided by an **importance** (influence) score, higher = more important:

- **static** metrics look at how much a unit changes the residual stream during one forward pass
  over calibration text (e.g. the cosine distance between a unit's input and output, ShortGPT's
  Block Influence), regardless of any task;
- **adaptive** metrics measure what a unit is worth *to a task objective* (the loss on Wikipedia,
  or on MMLU) by removing it and re-evaluating, e.g. leave-one-out or Shapley values.

Siddiqui et al. (2024), *A deeper look at depth pruning of LLMs* ([arXiv:2407.16286](https://arxiv.org/abs/2407.16286)),
show that adaptive metrics can trade performance between tasks, that self-attention sublayers are
far more prunable than MLP sublayers (removing a third of them barely changes MMLU on Mistral 7B),
and that simple stand-ins for a pruned sublayer recover part of the loss.
"""

HOW_TO = """
1. **Influence**: compute static metrics (one forward pass) or adaptive Shapley metrics (the task loss of
   many subnetworks: much slower; the sampled estimators give standard errors) of every block and
   sublayer, and see them as a heatmap (block 0 at the top; columns attn, mlp and whole block). Dark cells matter least and are
   pruned first.
2. **Prune and evaluate**: build a pruning plan (toggle units, type it, or take the N least
   important units by a metric), then compare Wikipedia perplexity and MMLU accuracy of the
   pruned model against the unpruned baseline.
3. **Pruning curves**: remove the K least important units one by one and evaluate every step; overlay
   several metrics on one chart per task metric.
4. **Task trade-offs**: compute metrics on each task's data, prune by each, and see what every ranking
   does to every task, with the rank correlations between rankings.
5. **Recovery**: replace the pruned units of the plan by cheap fitted stand-ins and compare methods
   side by side.
6. **Export**: write the pruned (and recovered) model to a directory and download it as a zip.

The pruning plan is shared by every page. Every result is cached: repeating a run is instant.
"""


def architecture_summary(loaded) -> None:
    """Show blocks, widths, heads and the parameters a pruned unit removes."""
    info = loaded.info
    st.subheader(f"{loaded.name}: {info.family} architecture")
    top = st.columns(4)
    top[0].metric("Blocks", info.n_blocks)
    top[1].metric("Hidden size d", info.hidden_size)
    top[2].metric("Attention heads (query / KV)", f"{info.n_heads} / {info.n_kv_heads}", help=f"head dim {info.head_dim}")
    top[3].metric("MLP width", info.intermediate_size)
    bottom = st.columns(4)
    bottom[0].metric("Parameters", f"{info.params_total / 1e6:,.1f}M", help="tied embeddings counted once")
    for column, (name, count) in zip(bottom[1:], [("attn", info.params_attn), ("mlp", info.params_mlp), ("block", info.params_block)]):
        column.metric(
            f"Parameters per {name}", f"{count / 1e6:,.2f}M",
            help=f"{count:,} parameters, {count / info.params_total:.1%} of the model (with its pre-norm)",
        )
    st.caption(
        f"Running on **{loaded.device}** in **{loaded.dtype_name}**; "
        f"context up to {info.max_position_embeddings:,} tokens; vocabulary {info.vocab_size:,}; "
        f"embeddings {'tied to' if info.tied_embeddings else 'separate from'} the output head."
    )


def landing() -> None:
    """The first page: where to start, how the pages fit together, the model's architecture, and what depth pruning is."""
    st.set_page_config(page_title="pruneviz", page_icon="✂️", layout="wide")
    model = ui.sidebar()
    st.title("pruneviz: depth pruning of LLMs")
    st.page_link(
        PAGES[1][0], icon="✂️",
        label="Start here: switch blocks and sublayers off and see MMLU and perplexity change against the unpruned model",
    )
    st.header("How to use the pages")
    st.markdown(HOW_TO)
    architecture_summary(model)
    st.header("What is depth pruning?")
    st.markdown(INTRO)


# (file, title, address) of every page after the landing page, in the sidebar's order; the addresses are the ones
# Streamlit gave these files before the app named its pages, so that saved permalinks still open them
PAGES = (
    ("pages/1_Influence.py", "Influence", "Influence"),
    ("pages/2_Prune_and_evaluate.py", "Prune and evaluate", "Prune_and_evaluate"),
    ("pages/3_Pruning_curves.py", "Pruning curves", "Pruning_curves"),
    ("pages/4_Task_trade-offs.py", "Task trade-offs", "Task_trade-offs"),
    ("pages/5_Recovery.py", "Recovery", "Recovery"),
    ("pages/6_Export.py", "Export", "Export"),
)
st.navigation([
    st.Page(landing, title="Start", icon="✂️", default=True),
    *(st.Page(file, title=title, url_path=address) for file, title, address in PAGES),
]).run()
