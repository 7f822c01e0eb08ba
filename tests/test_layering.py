"""Layering: pages -> app -> kdcore. kdcore is the library (no UI toolkit, no display code); app holds the
dashboard's logic and never reaches into pages; pages hold layout and widget wiring."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_PACKAGES = {"streamlit", "plotly", "matplotlib", "altair", "bokeh"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def offenders(package: str, forbidden: set[str]) -> dict[str, list[str]]:
    found = {}
    for path in files(package):
        bad = roots(imported_modules(path)) & forbidden
        if bad:
            found[str(path.relative_to(ROOT))] = sorted(bad)
    return found


def test_kdcore_imports_neither_the_dashboard_nor_a_ui_toolkit():
    assert files("kdcore")
    assert offenders("kdcore", UI_PACKAGES | {"app", "pages"}) == {}, "kdcore is the library under the dashboard"


def test_kdcore_uses_pandas_for_data_not_for_display():
    display = re.compile(r"\.style\b|Styler|to_html\(|pandas\.io\.formats|IPython")
    offenders = [str(p.relative_to(ROOT)) for p in files("kdcore") if display.search(p.read_text())]
    assert not offenders, f"display code in kdcore: {offenders}"


def test_app_never_imports_pages():
    assert files("app") and offenders("app", {"pages"}) == {}


def test_pages_import_only_app_kdcore_and_libraries():
    assert files("pages") and offenders("pages", {"tests", "test_app_support", "conftest"}) == {}


def test_the_checker_sees_nested_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import streamlit as st\n    from plotly import express\n")
    assert roots(imported_modules(sample)) == {"streamlit", "plotly"}
