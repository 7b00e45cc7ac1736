"""The app's helpers in ``pruneviz.ui`` without the embedded model: models reused or freed across reloads and
switches, output directories, short counts, metric tooltips, link settings per page, and remembered settings
(AppTest on small scripts). The pages: ``tests/real/test_app_pages.py``; the layering: ``tests/unit/test_layers.py``."""

from __future__ import annotations

import ast

from conftest import REPO

APP_FILES = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]


def test_a_model_from_before_a_module_reload_is_not_reused():
    from types import SimpleNamespace

    from pruneviz.ui import models

    # a stand-in for a LoadedModel built by modules that Streamlit has since re-imported
    assert not models._from_current_modules(SimpleNamespace(name="smollm2"))


def test_the_reload_check_sees_the_class_of_the_modules_imported_now(monkeypatch):
    """Streamlit keeps the first validate function it was given, so the check must not bind the class at import."""
    import sys
    from types import SimpleNamespace

    from conftest import tiny_llama

    from pruneviz.core.loading import from_modules
    from pruneviz.ui import models

    built_before_reload = from_modules("tiny", tiny_llama(), tokenizer=None)
    assert models._from_current_modules(built_before_reload)

    class ReimportedLoadedModel:
        pass

    monkeypatch.setitem(sys.modules, "pruneviz.core.loading", SimpleNamespace(LoadedModel=ReimportedLoadedModel))
    assert not models._from_current_modules(built_before_reload)


def test_metric_tooltips_give_every_formula_and_source():
    from pruneviz import ui

    text = ui.metrics_help(adaptive=True)
    assert "1 − cos(x, y)" in text and "ShortGPT" in text
    assert "influence = −Shapley value of the unit for the task loss" in text
    assert "LOO: v(all∖i) − v(all)" in text and "Siddiqui et al. 2024, §3.2" in text
    assert "loss_shapley" not in ui.metrics_help()


def test_output_directories_are_generated_under_the_cache_dir_and_zip(tmp_path, monkeypatch):
    import io
    import zipfile

    from pruneviz import ui

    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path))
    first = ui.output_directory("exports", "/models/../../etc/passwd", "3.attn,7", "bias/emulate")
    second = ui.output_directory("exports", "/models/../../etc/passwd", "3.attn,7", "bias/emulate")
    assert first.parent == tmp_path / "exports" and first != second
    assert first.name.startswith("passwd-3.attn_7-bias_emulate-")
    first.mkdir(parents=True)
    (first / "config.json").write_text("{}")
    (first / "recovery").mkdir()
    (first / "recovery" / "recovery.json").write_text("[]")
    names = zipfile.ZipFile(io.BytesIO(ui.zip_directory(first))).namelist()
    assert sorted(names) == [f"{first.name}/config.json", f"{first.name}/recovery/recovery.json"]


def test_switching_models_frees_the_previous_one(monkeypatch):
    import weakref

    from conftest import tiny_llama

    from pruneviz.core.loading import from_modules
    from pruneviz.ui import models

    loads = []

    def load_tiny(spec, device, dtype, trust_remote_code):
        loads.append((spec, trust_remote_code))
        return from_modules(spec, tiny_llama(), tokenizer=None)

    monkeypatch.setattr(models, "load_model", load_tiny)
    models.load_model_cached.clear()
    models._resident.clear()
    try:
        first = models.load_model_once("a", "cpu", "float32")
        assert models.load_model_once("a", "cpu", "float32") is first
        alive = weakref.ref(first.model)
        del first
        second = models.load_model_once("b", "cpu", "float32", trust_remote_code=True)
        assert alive() is None, "the previous model is freed when another is loaded"
        assert second.name == "b" and loads == [("a", False), ("b", True)]
    finally:
        models.load_model_cached.clear()
        models._resident.clear()


# ---------------------------------------------------------------- settings that outlive pages, and links per page


def test_short_counts_fit_a_card_at_any_model_size():
    from pruneviz import ui

    assert [ui.short_count(n) for n in (576, 885_312, 28_311_552, 999_999, 70_553_706_496)] == ["576", "885K", "28.3M", "1M", "70.6B"]
    assert ui.short_count(134_515_008, 4) == "134.5M" and ui.short_count(-2_831_616) == "-2.83M"
    # the longest a four-digit value gets (a card in a row of four holds about ten characters)
    assert max(len(ui.short_count(n, 4)) for n in (999_949, 123_456_789_012, -123_456_789)) <= 8


def test_every_page_with_its_own_link_settings_is_a_page():
    from pruneviz.ui.permalinks import PAGE_PARAMS, page_params

    names = set()
    for path in APP_FILES[1:]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "page" and node.args:
                names.add(node.args[0].value)
    assert set(PAGE_PARAMS) <= names, f"link settings for pages that do not exist: {set(PAGE_PARAMS) - names}"
    assert page_params("Recovery")["windows"].key == "recovery_windows"
    assert page_params("Prune and evaluate")["windows"].key == "wiki_windows"
    assert set(page_params(None)) == {"plan", "figure"}


def _remembered_format_script():
    import streamlit as st

    from pruneviz.ui.state import remembered

    # the default a page computes from the loaded model (cloze under 1B parameters, letter above)
    st.radio("Format", ("letter", "cloze"), **remembered("format", st.session_state.get("model_default", "cloze")))


def test_a_remembered_setting_follows_its_default_until_chosen():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_remembered_format_script).run()
    assert at.radio[0].value == "cloze"
    at.session_state["model_default"] = "letter"  # another model
    assert at.run().radio[0].value == "letter" and "format" not in at.session_state
    at.radio[0].set_value("cloze").run()  # the user's choice
    at.session_state["model_default"] = "cloze"
    at.run()
    at.session_state["model_default"] = "letter"
    assert at.run().radio[0].value == "cloze" and at.session_state["format"] == "cloze"


def _remembered_form_script():
    import streamlit as st

    from pruneviz.ui.state import form_submit_button, remembered

    if not st.session_state.get("elsewhere"):  # another page: the form is not drawn, Streamlit drops its widgets
        with st.form("settings"):
            st.number_input("Steps", 1, 10, **remembered("steps", 3, (1, 10), form="settings"))
            st.radio("Format", ("letter", "cloze"), **remembered("format", st.session_state.get("model_default", "cloze"), form="settings"))
            form_submit_button("settings", "Run")


def test_a_form_keeps_its_remembered_settings_once_submitted():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_remembered_form_script).run()
    assert at.number_input[0].value == 3 and "steps" not in at.session_state
    at.number_input[0].set_value(5)
    at.button[0].click().run()
    assert at.session_state["steps"] == 5
    at.session_state["elsewhere"] = True
    at.run()
    at.session_state["elsewhere"] = False
    assert at.run().number_input[0].value == 5, "the submitted value comes back with the form"
    assert "format" not in at.session_state, "a value left at its default is not a choice"
    at.session_state["model_default"] = "letter"  # another model
    assert at.run().radio[0].value == "letter"
    at.session_state["steps"] = 12  # a permalink's value, above the input's range
    assert at.run().number_input[0].value == 10 and at.session_state["steps"] == 12
    at.button[0].click().run()  # submitted as shown: the link's 12 stays for a model where it fits
    assert at.session_state["steps"] == 12


def test_a_change_within_noise_is_neither_green_nor_red():
    from pruneviz.ui.cards import delta_style

    assert delta_style(-2.06, lower_is_better=True) == {"delta_color": "inverse"}
    assert delta_style(-2.06, lower_is_better=True, beyond_noise=False) == {"delta_color": "off"}
