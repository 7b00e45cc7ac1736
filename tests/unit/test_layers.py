"""The import direction of the library, folder by folder (docs/ARCHITECTURE.md draws it), and the app's layering.

core -> engine -> data -> evaluation -> influence -> studies -> the facade and its peers (api, cli, plots,
deployment) -> ui. A module may import its own layer and the layers before it, never one after:
every ``from pruneviz... import`` and every relative import, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "pruneviz"
APP_FILES = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]
LIBRARY_FILES = sorted(PACKAGE.rglob("*.py"))
UI_PACKAGE = PACKAGE / "ui"
LAYERS = ["core", "engine", "data", "evaluation", "influence", "studies", "", "ui"]  # "" = modules at the top


def layer_of(module: str) -> str:
    """The layer of a dotted module name under pruneviz (``"core.plan"`` -> ``"core"``, ``"api"`` -> ``""``)."""
    head = module.split(".")[0]
    return head if head in LAYERS else ""


def imported_modules(path: Path) -> set[str]:
    """The pruneviz modules (dotted, without the ``pruneviz.`` prefix) that ``path`` imports."""
    package = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "pruneviz":
                target = node.module.removeprefix("pruneviz").lstrip(".")
            else:
                continue
            # "from . import api" names a module; "from .plan import X" an attribute
            found.update(f"{target}.{a.name}".lstrip(".") if not node.module or target in LAYERS else target for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("pruneviz.") for a in node.names if a.name.startswith("pruneviz."))
    return found


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_imports_only_its_own_layer_and_those_below(path):
    own = LAYERS.index(layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts)))
    above = {m for m in imported_modules(path) if LAYERS.index(layer_of(m)) > own}
    assert not above, f"{path.relative_to(PACKAGE)} ({LAYERS[own] or 'top'}) imports from a layer above it: {sorted(above)}"


def test_every_layer_is_a_folder_with_modules_and_the_checker_sees_imports():
    for layer in filter(None, LAYERS):
        assert (PACKAGE / layer / "__init__.py").is_file() and len(list((PACKAGE / layer).glob("*.py"))) > 1, layer
    # the checker itself: relative, absolute and lazy imports are all seen
    assert {"core.plan", "evaluation.run", "influence.run"} <= imported_modules(PACKAGE / "studies" / "curves.py")
    assert "studies.recovery_report" in imported_modules(PACKAGE / "api.py")


def imported_roots(path: Path) -> set[str]:
    """Top-level package names that ``path`` imports (absolute imports only)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", APP_FILES, ids=lambda p: p.name)
def test_app_and_pages_never_import_torch_or_transformers(path):
    assert not imported_roots(path) & {"torch", "transformers"}, f"{path.name} must call pruneviz, not torch"


def test_only_the_pruneviz_ui_package_imports_streamlit():
    ui_files = [p for p in LIBRARY_FILES if UI_PACKAGE in p.parents]
    assert any("streamlit" in imported_roots(p) for p in ui_files), "the check below would pass without finding the UI"
    offenders = [p.relative_to(REPO) for p in LIBRARY_FILES if UI_PACKAGE not in p.parents and "streamlit" in imported_roots(p)]
    assert not offenders, f"only modules under pruneviz/ui/ may import streamlit: {offenders}"


def test_the_sidebar_names_every_page_in_numeric_order():
    pages = [p.name for p in APP_FILES[1:]]
    assert pages == [
        "1_Influence.py", "2_Prune_and_evaluate.py", "3_Pruning_curves.py", "4_Task_trade-offs.py",
        "5_Recovery.py", "6_Export.py",
    ]
    app = ast.parse(APP_FILES[0].read_text())
    (listed,) = [ast.literal_eval(node.value) for node in app.body
                 if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["PAGES"]]
    assert [Path(file).name for file, _, _ in listed] == pages, "app.py's st.navigation lists every page, in order"
    assert [title for _, title, _ in listed] == [
        "Influence", "Prune and evaluate", "Pruning curves", "Task trade-offs", "Recovery", "Export",
    ]
