"""Small Streamlit building blocks shared by the pages: the sidebar status, problem messages beside
widgets, run headers and pickers."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from app import state, studies, tables
from app.tables import format_duration, status_text
from kdcore.summary import WARNED

STATUS_COLORS = {"queued": "gray", "running": "blue", "completed": "green", "failed": "red", "cancelled": "orange"}
STATUS_ICONS = {"queued": "schedule", "running": "play_circle", "completed": "check_circle", "failed": "error",
                "cancelled": "cancel"}


def init_state(defaults: Mapping[str, Any]) -> None:
    """Give every key its default once, so widgets are created from session state alone (no value= clash)."""
    for key, value in defaults.items():
        if key not in st.session_state:
            st.session_state[key] = value


def keep_valid(key: str, options: Sequence[Any], fallback: Any = "first") -> None:
    """A selection that is no longer an option (a deleted run, another dataset's classes) is reset."""
    value = st.session_state.get(key)
    if isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
    elif value not in options:
        st.session_state[key] = (options[0] if options else None) if fallback == "first" else fallback


def problems_here(problems: Mapping[str, list[str]], key: str) -> None:
    """The problems of one widget, in red, right under it."""
    for message in problems.get(key, []):
        st.markdown(f":red[:material/error: {message}]")


def status_badge(status: Any) -> str:
    value = str(getattr(status, "value", status))
    icon = STATUS_ICONS.get(value, "help")
    return f":{STATUS_COLORS.get(value, 'gray')}-badge[:material/{icon}: {status_text(value)}]"


def run_caption(record: Any) -> str:
    teacher = record.teacher_label
    if teacher:
        parts = [f"`{record.id}`", record.dataset, f"{teacher} → {record.student}", tables.method_text(record)]
    else:
        parts = [f"`{record.id}`", record.dataset, record.student, tables.NO_TEACHER]
    if record.device:
        parts.append(record.device)
    world = int((record.info or {}).get("world_size") or 1)
    if world > 1:  # one run over several processes (DDP)
        rule = str(record.info.get("lr_scaling") or "none").split(":", 1)[0]  # the rule's name, before its reason
        parts.append(f"world size {world} ({record.info.get('device_batch')} per device, "
                     f"global batch {record.info.get('global_batch')}, lr scaling: {rule})")
    if record.is_terminal and record.duration_s is not None:
        parts.append(f"took {format_duration(record.duration_s)}")
    elif record.started_at is not None:
        parts.append(f"started {record.started_at.astimezone():%H:%M:%S}")
    return " · ".join(parts)


def worker_groups(workers: list[Any]) -> dict[str, list[Any]]:
    """Worker name -> its slots: a worker that owns several devices registers one slot per device
    (ids `<worker>-s0`, `-s1`, …), so the number of slots is the number of devices it offers."""
    groups: dict[str, list[Any]] = {}
    for w in workers:
        base, _, slot = w.id.rpartition("-s")
        groups.setdefault(base if base and slot.isdigit() else w.id, []).append(w)
    return groups


def worker_lines(workers: list[Any], devices_of: dict[str, int]) -> list[str]:
    """One line per worker: its device kind, busy and free devices, and what it trains. The slots of a worker
    that owns several devices (ids `<worker>-s0`, `-s1`, …, one per device) are one worker; a run holds as
    many devices as its spec asks (`devices_of`: run id -> devices)."""
    lines = []
    for name, slots in worker_groups(workers).items():
        runs = sorted({w.current_run for w in slots if w.current_run})
        busy = min(len(slots), sum(devices_of.get(r, 1) for r in runs))
        doing = ", ".join(f"training `{r}`" + (f" on {devices_of[r]} devices" if devices_of.get(r, 1) > 1 else "")
                          for r in runs) or "idle"
        devices = f"{busy} busy, {len(slots) - busy} free" if len(slots) > 1 else ("busy" if busy else "free")
        lines.append(f":green[●] `{name}` · {slots[0].device} · {devices} · {doing}")
    return lines


def sidebar_status() -> None:
    """Workers, their devices and the queue, refreshed every few seconds."""
    store = state.get_store()
    try:
        workers = store.workers(alive_only=True)
        counts = store.queue_counts()
    except Exception as err:  # noqa: BLE001 - a database that cannot be read must not hide the pages
        st.warning(f"The run store cannot be read: {err}")
        return
    st.markdown("**Workers**")
    if workers:
        devices_of = {}
        for w in workers:
            if w.current_run:
                try:
                    devices_of[w.current_run] = store.get(w.current_run).spec.devices
                except Exception:  # noqa: BLE001 - a run deleted meanwhile counts as one device
                    devices_of[w.current_run] = 1
        for line in worker_lines(workers, devices_of):
            st.markdown(line)
    elif state.local_worker_starting():
        st.markdown(":blue[●] The local worker is starting…")
    else:
        st.markdown(":orange[●] No worker is running: queued runs wait.")
        if state.local_worker_enabled():
            if st.button("Start a local worker", key="start_worker"):
                pid = state.start_worker_now()
                st.toast(f"Started a worker (pid {pid})." if pid else "A worker is already starting.")
        else:
            st.caption("The embedded worker is off (KD_LOCAL_WORKER=0): start `python -m kdcore worker`.")
    st.markdown("**Queue**")
    st.markdown(f"{counts.get('running', 0)} running · {counts.get('queued', 0)} queued · "
                f"{counts.get('completed', 0)} done · {counts.get('failed', 0)} failed")


def live_sidebar() -> None:
    st.fragment(run_every=3.0)(sidebar_status)()


def exclude_warned(any_warned: Any, key: str) -> bool:
    """The box that leaves runs with a training warning out of a table's means: shown only when a run has one."""
    return bool(any_warned) and st.checkbox(studies.EXCLUDE_WARNED, key=key, help=studies.EXCLUDE_WARNED_HELP)


def seed_table(table: Any, frame: Any, key: str, caption: str) -> None:
    """A table of mean ± std over seeds (`frame`, drawn from the StudyTable `table`: a study's, or runs grouped by
    a field) and its caption, followed by what the means did with runs with a training warning. Its n column is
    widened when a cell counts such runs ("4/5, 1 ⚠ out"), which the grid's own sizing cuts short."""
    warned = frame["n"].astype(str).str.contains(WARNED).any()
    st.dataframe(frame, hide_index=True, key=key, placeholder="—", column_config={"n": st.column_config.TextColumn(
        width=120 if warned else None, help=f"Runs in the mean / runs; {WARNED} = runs with a training warning, kept "
                                            "in the mean or (out) left out of it.")})
    note = table.health_note()
    st.caption(caption + (f"  \n{note}" if note else ""))


def health_column(full_sentence: str = "in the run's view") -> Any:
    """The column config of tables.HEALTH in a table of runs; `full_sentence`: where the warning's whole text is."""
    return st.column_config.TextColumn(
        width=160, help=f"{WARNED}: the run's trainer warned; collapsed: its student stopped learning, so its numbers "
                        f"say nothing about the method. The full sentence: {full_sentence}.")


def run_options(records: Sequence[Any]) -> dict[str, str]:
    """run id -> 'name · status · id' for pickers."""
    return {r.id: f"{r.name} · {str(r.status.value)} · {r.id}" for r in records}


def attempt(action) -> bool:
    """Run a store action; a refusal (KDError: not allowed, a bad spec) is shown as its one sentence.
    True when it went through."""
    from kdcore.errors import KDError

    try:
        action()
    except KDError as err:
        st.error(str(err))
        return False
    return True
