"""Streamlit helpers shared by ``app.py`` and ``pages/`` (the only pruneviz package that imports Streamlit).

Pages call every helper as ``ui.<name>``; the names below are re-exported from these modules:

* :mod:`.sidebar`: :func:`page` starts a page and :func:`sidebar` draws the model picker (its state lives
  in ``st.session_state`` so every page sees the same choice) and returns the loaded model; a sublayer
  export's plan is adopted there (:func:`~.sidebar.adopt_export_plan`); :func:`plotly_chart` draws a
  figure whose modebar downloads PNG or SVG (the sidebar's choice); :func:`stored_result` finds a
  result stored for the current model;
* :mod:`.models`: :func:`load_model_once` keeps one model in memory (:func:`load_model_cached`) and frees
  the previous one on a switch; :func:`memory_caption` is the memory line of the sidebar;
* :mod:`.feedback`: :class:`ProgressBar` adapts ``st.progress`` to the library's ``progress(done, total)``
  callbacks; :func:`run_or_stop` turns a :class:`~pruneviz.core.errors.PrunevizError` into one ``st.error`` and
  stops the page, :func:`stop_with_error` does the same for a page's own input checks; :func:`cancellable`
  draws a Cancel button for long work whose :class:`ProgressBar` callbacks then raise
  :class:`~pruneviz.core.errors.Cancelled`;
* :mod:`.state`: the ``st.session_state`` keys every page shares (the plan under :data:`PLAN_KEY`), the
  settings :func:`remembered` across pages and model switches (every page's inputs; a form's when it is
  submitted with :func:`form_submit_button`), and
  :func:`current_deployment`, the demo / shared-mode settings (:mod:`pruneviz.deployment`) that turn the
  model box into a select of configured models and cap every count (:func:`cap`);
* :mod:`.inputs`: :func:`calibration_inputs` and :func:`task_inputs` keep the data pickers of every page
  the same and fill them from the registries; :func:`heldout_note` says which questions ranked and which
  were evaluated;
* :mod:`.plan_editor`: :func:`plan_input` edits the pruning plan shared by every page (a text box, and on
  the prune page a toggle per unit), :func:`adopt_plan` makes a computed plan the session's, and
  :func:`rejected_plan_message` says that a rejected edit left the previous plan in force;
* :mod:`.evaluation_set`, :mod:`.live_evaluation` and :mod:`.comparison`: the prune page's evaluation set (whose
  unpruned baseline the sidebar starts in the background when a model loads), its automatic evaluation
  task by task against that baseline with live provisional results, and the results (value ± 95 % CI,
  change, noise verdict, what the plan saves);
* :mod:`.ranking`: :func:`metric_inputs` and :func:`estimator_inputs` pick how units are ranked;
  :func:`metric_label`, :func:`metrics_help` and :func:`metric_caption` describe each metric with its
  formula and source;
* :mod:`.recoveries`: :func:`fitted_recoveries` / :func:`remember_recovery` keep the recoveries fitted
  for a plan, :func:`recovery_input` picks one, and :func:`saved_copy` finds where identical stand-ins
  were already saved;
* :mod:`.permalinks`: :func:`permalink_params` / :func:`apply_permalink` restore the plan and a page's
  own view settings from a link;
* :mod:`.cards`: :func:`short_count` writes a count short enough for an ``st.metric`` card, and
  :func:`delta_style` colours a change (grey, without an arrow, when there is none);
* :mod:`.files`: :func:`output_directory` names a fresh directory under the cache dir (a deployment
  never writes where a user says), and :func:`zip_directory` packs one for a download button.
"""

from .cards import delta_style, short_count
from .comparison import show_results_header
from .evaluation_set import chosen_evaluation_set, evaluation_inputs, start_background_baselines
from .feedback import CANCEL_NOTE, ProgressBar, cancellable, request_cancel, run_or_stop, stop_with_error
from .files import directory_bytes, output_directory, zip_directory
from .inputs import (
    CALIBRATION_DATA,
    MMLU_TASKS,
    calibration_data_options,
    calibration_inputs,
    check_heldout,
    dataset_label,
    heldout_note,
    mmlu_task_label,
    task_inputs,
)
from .live_evaluation import evaluate_now, run_evaluations, show_stored, signature
from .models import load_model_cached, load_model_once, memory_caption
from .permalinks import apply_permalink, permalink_params
from .plan_editor import adopt_plan, plan_input, rejected_plan_message
from .ranking import (
    ADAPTIVE_COST_NOTE,
    adaptive_metrics,
    estimator_choice,
    estimator_inputs,
    metric_caption,
    metric_inputs,
    metric_label,
    metrics_help,
    scheme_input,
)
from .recoveries import FittedRecovery, fitted_recoveries, forget_recoveries, recovery_input, remember_recovery, saved_copy
from .sidebar import page, plotly_chart, sidebar, stored_result
from .state import (
    INFLUENCE_RESULT_KEY,
    PLAN_KEY,
    PRUNE_RECOVERY_KEY,
    RECOVERIES_KEY,
    cap,
    current_deployment,
    form_submit_button,
    remembered,
)

__all__ = [
    "ADAPTIVE_COST_NOTE", "CALIBRATION_DATA", "CANCEL_NOTE", "INFLUENCE_RESULT_KEY", "MMLU_TASKS", "PLAN_KEY", "PRUNE_RECOVERY_KEY",
    "RECOVERIES_KEY", "FittedRecovery", "ProgressBar", "adaptive_metrics", "adopt_plan", "apply_permalink",
    "calibration_data_options", "calibration_inputs", "cancellable", "cap", "check_heldout", "chosen_evaluation_set", "current_deployment",
    "dataset_label", "delta_style", "directory_bytes", "estimator_choice", "estimator_inputs", "evaluate_now", "evaluation_inputs", "fitted_recoveries", "forget_recoveries",
    "form_submit_button", "heldout_note", "load_model_cached", "load_model_once", "memory_caption", "metric_caption",
    "metric_inputs", "metric_label", "metrics_help", "mmlu_task_label", "output_directory", "page", "permalink_params",
    "plan_input", "plotly_chart", "recovery_input", "rejected_plan_message", "remember_recovery", "remembered",
    "request_cancel", "run_evaluations", "run_or_stop", "saved_copy", "scheme_input", "short_count", "show_results_header", "show_stored",
    "sidebar", "signature", "start_background_baselines", "stop_with_error", "stored_result", "task_inputs",
    "zip_directory",
]
