"""What a run's live view has read so far, advanced with only what the store added since the last poll,
so each refresh costs the new points and log lines, not the whole history."""
from __future__ import annotations

from typing import Any

KEEP_EVENTS = 300  # log lines kept for the tail (the view shows the last 200)


def empty_view(attempts: int) -> dict[str, Any]:
    return {"frame": None, "last": -1, "events": [], "last_event": 0, "attempts": attempts}


def advance_view(store: Any, run_id: str, data: dict[str, Any] | None, attempts: int) -> dict[str, Any]:
    """The live view's data after one poll: `frame` (metric points, see tables.append_points), `last`
    (the highest step read), `events` (the log tail), `last_event` (its last id). A run resumed since
    (`attempts` changed) rewrote its history, so it is read again from the start."""
    from app.tables import append_points

    if data is None or data["attempts"] != attempts:
        data = empty_view(attempts)
    points = store.metrics(run_id, since_step=data["last"])
    if points:
        data["frame"] = append_points(data["frame"], points)
        data["last"] = max(p.step for p in points)
    new_events = store.events(run_id, since_id=data["last_event"])
    if new_events:
        data["events"] = (data["events"] + new_events)[-KEEP_EVENTS:]
        data["last_event"] = new_events[-1].id
    return data
