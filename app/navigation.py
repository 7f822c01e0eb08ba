"""The app's pages (files in the top-level pages/ folder) and how pages link to each other."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
PAGES_DIR = ROOT / "pages"


@dataclass(frozen=True)
class PageInfo:
    key: str
    file: str
    title: str
    icon: str
    url_path: str
    visible: bool = True


PAGES: tuple[PageInfo, ...] = (
    PageInfo("home", "home.py", "Home", ":material/home:", "home"),
    PageInfo("new", "new_experiment.py", "New experiment", ":material/science:", "new"),
    PageInfo("runs", "runs.py", "Runs", ":material/monitoring:", "runs"),
    PageInfo("run", "run.py", "Run", ":material/timeline:", "run", visible=False),  # opened from Runs
    PageInfo("compare", "compare.py", "Compare", ":material/compare_arrows:", "compare"),
    PageInfo("study", "study.py", "Studies", ":material/stacked_line_chart:", "studies"),
    PageInfo("soft_labels", "soft_labels.py", "Soft labels", ":material/bar_chart:", "soft-labels"),
    PageInfo("lab", "lab.py", "Dark-knowledge lab", ":material/school:", "lab"),  # only when the file exists
    PageInfo("models", "models.py", "Models", ":material/memory:", "models"),
    PageInfo("team", "team.py", "Team", ":material/group:", "team"),  # accounts, passwords, sign-in log
)


def available() -> list[PageInfo]:
    return [p for p in PAGES if (PAGES_DIR / p.file).is_file()]


def page(key: str) -> Any:
    """The st.Page for a page key ("runs"); equal pages share a url path, so switching to it works."""
    info = next(p for p in PAGES if p.key == key)
    return st.Page(str(PAGES_DIR / info.file), title=info.title, icon=info.icon, url_path=info.url_path,
                   default=info.key == "home", visibility="visible" if info.visible else "hidden")


def all_pages() -> list[Any]:
    return [page(p.key) for p in available()]


def open_run(run_id: str) -> None:
    """Go to the view of one run (/run?run=<id>)."""
    st.switch_page(page("run"), query_params={"run": run_id})


def go(key: str, **query: str) -> None:
    st.switch_page(page(key), query_params=query or None)
