"""Nothing is accepted or served over plain HTTP before sign-in.

Streamlit answers two kinds of request outside the websocket that carries a session: file uploads
(`PUT /_stcore/upload_file/<session>/<file>`, for st.file_uploader) and media (`GET /media/<file>`: images,
and the files behind st.download_button). Neither knows about our login. `SignedInOnly` is an ASGI middleware
(installed through `st.App` in app/main.py) that lets them through only for a signed-in session:

- an upload only into a session that has signed in (its id is in the upload URL);
- a media file only to a browser holding the cookie of a signed-in session. Every browser gets a random
  `kd_browser` cookie (HttpOnly, so page scripts cannot read it) with its first page; the websocket that opens
  the session carries it, and the login gate records it with the session (`note_session`). A media URL copied
  to another browser, or fetched by a script without that cookie, is refused.

The record is this process's memory: the dashboard server is one process, and a restart signs everyone out
of uploads and downloads until their sessions reconnect (they do so by themselves)."""
from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

BROWSER_COOKIE = "kd_browser"
_UPLOAD = re.compile(r"/_stcore/upload_file/(?P<session>[^/]+)")  # after the server's base path

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _session_alive(session_id: str) -> bool:
    from streamlit import runtime

    return runtime.exists() and runtime.get_instance().is_active_session(session_id)


class SignedInSessions:
    """Sessions that passed the login gate, with the browser cookie each was opened with. Thread-safe: the
    script threads write, the server's event loop reads."""

    def __init__(self, alive: Callable[[str], bool] = _session_alive):
        self._browser_of: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._alive = alive

    def admit(self, session_id: str, browser: str | None) -> None:
        with self._lock:
            if self._browser_of.get(session_id, "?") == browser:
                return
            # Forget sessions that have ended while we are here: the record stays as small as the live sessions.
            for old in [s for s in self._browser_of if not self._alive(s)]:
                del self._browser_of[old]
            self._browser_of[session_id] = browser

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._browser_of.pop(session_id, None)

    def session_signed_in(self, session_id: str) -> bool:
        with self._lock:
            known = session_id in self._browser_of
        return known and self._alive(session_id)

    def browser_signed_in(self, browser: str | None) -> bool:
        if not browser:
            return False
        with self._lock:
            sessions = [s for s, b in self._browser_of.items() if b is not None and secrets.compare_digest(b, browser)]
        return any(self._alive(s) for s in sessions)


SIGNED_IN = SignedInSessions()


def note_session(signed_in: bool) -> None:
    """Called by the login gate on every script run: record (or forget) this session as signed in."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return
    if not signed_in:
        SIGNED_IN.forget(ctx.session_id)
        return
    try:
        browser = st.context.cookies.get(BROWSER_COOKIE)
    except Exception:  # noqa: BLE001 - no client context (AppTest): no browser to serve media to
        browser = None
    SIGNED_IN.admit(ctx.session_id, browser if isinstance(browser, str) else None)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            if name in jar:
                return jar[name].value
    return None


def _is_https(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    return any(k == b"x-forwarded-proto" and v.strip().lower() == b"https" for k, v in scope.get("headers", ()))


class SignedInOnly:
    """ASGI middleware: refuses uploads and media before sign-in (see the module docstring) and hands each new
    browser its `kd_browser` cookie."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 sessions: SignedInSessions = SIGNED_IN):
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        browser = _cookie(scope, BROWSER_COOKIE)
        refusal = self.refusal(scope["path"], scope["method"], browser)
        if refusal:
            await _refuse(send, refusal)
            return
        if browser is not None:
            await self.app(scope, receive, send)
            return
        cookie = (f"{BROWSER_COOKIE}={secrets.token_urlsafe(32)}; Path=/; HttpOnly; SameSite=Lax"
                  + ("; Secure" if _is_https(scope) else "")).encode("latin-1")

        async def send_with_cookie(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def refusal(self, path: str, method: str, browser: str | None) -> str | None:
        """The reason to refuse this request, or None to pass it on."""
        base = _base_path()
        if not path.startswith(base + "/"):
            return None
        path = path[len(base):]
        upload = _UPLOAD.match(path)
        if upload and method != "OPTIONS":  # a CORS preflight carries no file
            if not self.sessions.session_signed_in(upload["session"]):
                return "Sign in before uploading files."
        elif path.startswith("/media/") and not self.sessions.browser_signed_in(browser):
            return "Sign in to download this file."
        return None


def _base_path() -> str:
    """The server's base URL path ("" or "/kd"): Streamlit's own routes live under it."""
    from streamlit import config

    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


async def _refuse(send: Send, reason: str) -> None:
    body = reason.encode("utf-8")
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode("ascii")), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
