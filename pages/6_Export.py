"""Export the current plan (optionally with a fitted recovery) as a model directory and a zip.

The directory is named by the app under the cache directory: a shared deployment never writes to a
path a visitor types.
"""

import streamlit as st

from pruneviz import ui
from pruneviz.core.errors import PrunevizError
from pruneviz.core.formatting import format_bytes
from pruneviz.studies.export import delete_export, export_model, is_standalone

RESULT_KEY = "export_result"
# st.session_state key of the last deletion's outcome, (st function name, sentence), shown once
DELETED_KEY = "export_deleted"


def expected_kind(plan, recovery, n_blocks: int) -> str:
    """What the export will be, said before it is made."""
    units = plan.units()
    if plan.is_everything(n_blocks):
        return "This plan prunes every block, which leaves **no model to export**: keep at least one block."
    if not units:
        return "The plan is empty, so the export is a **standalone** copy of the unpruned model."
    if is_standalone(plan, recovery is not None):
        return "This plan removes whole blocks only, so the export is a **standalone** model that stock `transformers` loads."
    return (
        "This plan removes sublayers or adds stand-ins, so the export is the full model plus `pruning_plan.json`"
        " (and the stand-ins); `pruneviz.studies.export.load_exported` rebuilds the pruned model."
    )


def export(loaded, plan, fitted) -> dict:
    """Write the export into a new directory under the cache dir; return what the page shows."""
    directory = ui.output_directory("exports", loaded.name, str(plan) or "unpruned")
    with st.spinner(f"Writing the model to {directory} ..."):
        report = ui.run_or_stop(export_model, loaded, plan, directory, fitted.recovery if fitted else None)
    return {
        "report": report, "plan": str(plan), "recovery": fitted.name if fitted else None,
        "size": ui.directory_bytes(report.directory), "model": loaded.fingerprint,
    }


def show_report(result: dict) -> None:
    """Standalone or not, blocks kept, parameters before and after, KV cache saved, and the zip."""
    report = result["report"]
    if report.standalone:
        st.success(
            f"Exported a **standalone** model: `AutoModelForCausalLM.from_pretrained(\"{report.directory}\")` "
            "loads it with stock transformers, no pruneviz needed."
        )
    else:
        st.info(
            "Exported the full model with `pruning_plan.json`"
            + (f" and the stand-ins of {result['recovery']}" if result["recovery"] else "")
            + f": not standalone (the files hold every weight; the plan skips the pruned units). Load it with "
            f"`pruneviz.studies.export.load_exported(\"{report.directory}\")`."
        )
    removed = report.params_before - report.params_after
    # short values (exact counts in the tooltips) in two rows of two: a card cuts a longer value off, and
    # four in a row leave about 90 pixels each next to the sidebar on half a laptop screen
    columns = [*st.columns(2), *st.columns(2)]
    columns[0].metric("Blocks kept", report.blocks_kept)
    columns[1].metric("Params before", ui.short_count(report.params_before, 4), help=f"{report.params_before:,} parameters.")
    columns[2].metric(
        "Params after", ui.short_count(report.params_after, 4),
        delta=f"{ui.short_count(-removed)} ({report.params_after / report.params_before - 1:.1%})",
        **ui.delta_style(-removed, lower_is_better=True),
        help=f"{report.params_after:,} parameters, {removed:,} fewer.",
    )
    columns[3].metric(
        "KV cache saved", format_bytes(report.kv_bytes_per_token_saved), delta="per token", delta_color="off",
        delta_arrow="off",
        help=f"{report.kv_bytes_per_token_saved:,} bytes: keys and values no longer stored per token (removed "
        "attention sublayers, at the model's dtype size).",
    )
    st.caption(f"Plan '{result['plan'] or 'nothing pruned'}'; {result['size'] / 1e6:,.0f} MB in `{report.directory}`.")
    st.download_button(
        f"Download zip ({result['size'] / 1e6:,.0f} MB)", data=lambda: ui.zip_directory(report.directory),
        file_name=f"{report.directory.name}.zip", mime="application/zip", on_click="ignore", key="export_zip",
        help="The zip is built when you click; the directory also stays on the server.",
    )
    st.button("Delete this export from the server", key="export_delete", on_click=delete_stored_export, args=(report.directory,),
              help="Removes the directory (a full copy of the weights); download the zip first if you need it.")


def delete_stored_export(directory) -> None:
    """on_click of the delete button: delete before the page is drawn again, so that nothing of the export (its
    download button) is drawn after it is gone; the outcome is said once, by the next run."""
    try:
        freed = delete_export(directory)
    except PrunevizError as error:
        st.session_state[DELETED_KEY] = ("error", str(error))
        return
    st.session_state.pop(RESULT_KEY, None)
    st.session_state[DELETED_KEY] = ("success", f"Deleted {directory} ({freed / 1e6:,.0f} MB freed).")


model = ui.page(
    "Export",
    "Export",
    "Write the pruned model to disk. Removing only whole blocks gives a smaller model that stock "
    "`transformers` loads as it is; any other plan keeps the weights and records the plan beside them."
)
current = ui.plan_input(model, "export")
chosen = ui.recovery_input(
    model, current, "export_recovery",
    help="Recoveries fitted for this plan on the Recovery page, newest first. With stand-ins the export "
    "is the full model plus the plan and the stand-ins (pruneviz loads it).",
)
st.markdown(expected_kind(current, chosen, model.n_blocks))
if (deleted := st.session_state.pop(DELETED_KEY, None)) is not None:
    getattr(st, deleted[0])(deleted[1])
demo = ui.current_deployment().demo
if demo:
    st.info("Export is off in this shared demo: every export writes a copy of the model to the server's disk. "
            "Run pruneviz on your own machine (`make run`) to export.")
if st.button("Export", type="primary", disabled=demo):
    st.session_state[RESULT_KEY] = export(model, current, chosen)
stored = ui.stored_result(RESULT_KEY, model)
if stored is not None:
    if stored["plan"] != str(current):
        st.warning(f"This export is of the plan '{stored['plan'] or 'nothing pruned'}'; press Export for the current plan.")
    show_report(stored)
