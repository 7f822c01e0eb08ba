"""Nothing is uploaded or downloaded before sign-in: `streamlit run app/main.py` on loopback, driven by headless
Chromium. A signed-out session's upload is refused (and the same session's is accepted once signed in); a
checkpoint's download URL, obtained by a signed-in session, is served to that browser only."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import browser_support as bs
import pytest
from browser_support import idle
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from app.guard import SignedInOnly, SignedInSessions
from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.accounts import Accounts
from kdcore.paths import run_dir

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

PASSWORD = "alice's own password"
CHECKPOINT = os.urandom(4096)

# A PUT to Streamlit's upload route as its own frontend sends it (XSRF token from the cookie, multipart body).
UPLOAD_JS = """async (session) => {
  const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_streamlit_xsrf=')) || '').slice(16);
  const body = new FormData();
  body.append('file', new Blob([new Uint8Array(100000)]), 'teacher.pt');
  const response = await fetch(`/_stcore/upload_file/${session}/probe-file`,
                               {method: 'PUT', body, headers: xsrf ? {'X-Xsrftoken': xsrf} : {}});
  return response.status;
}"""


def completed_run_with_a_checkpoint(owner: str) -> str:
    store = RunStore()
    run_id = store.submit({"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 1}, owner=owner,
                          name="guarded run", check=False)
    store.register_worker("w1", host="test", pid=1, device="cpu")
    run = store.claim_next("w1", device="cpu")
    folder = run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(CHECKPOINT)
    assert store.finish_run(run_id, "w1", run.attempts, RunStatus.COMPLETED)
    return run_id


def status_of(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_signed_out_sessions_upload_nothing_and_downloads_stay_with_their_browser(kd_home, monkeypatch):
    bs.require_chromium()
    monkeypatch.setenv("KD_REQUIRE_LOGIN", "1")
    Accounts().add("alice", PASSWORD)
    completed_run_with_a_checkpoint("alice")
    sessions: list[str] = []

    def watch(ws) -> None:
        def frame(payload) -> None:
            if isinstance(payload, (bytes, bytearray)):
                msg = ForwardMsg()
                try:
                    msg.ParseFromString(bytes(payload))
                except Exception:  # noqa: BLE001 - not a ForwardMsg
                    return
                if msg.HasField("new_session"):
                    sessions.append(msg.new_session.initialize.session_id)
        ws.on("framereceived", frame)

    with bs.streamlit_app(kd_home, kd_home.parent / "streamlit.log", local_worker=False) as url, \
            bs.chromium_page() as page:
        page.on("websocket", watch)
        page.goto(url, wait_until="networkidle")
        page.get_by_label("User name").wait_for(timeout=60_000)
        idle(page)
        bs.snap(page, "guard_01_login")
        assert sessions, "no session id seen on the websocket"

        # Signed out: the session exists, but its uploads are refused before the body is read.
        assert page.evaluate(UPLOAD_JS, sessions[-1]) == 403

        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=60_000)
        idle(page)
        assert page.evaluate(UPLOAD_JS, sessions[-1]) == 204  # the same session, signed in: accepted

        # The checkpoint's download, from the run's view.
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Runs", exact=True).click()
        open_button = page.locator('[data-testid^="stBaseButton"]').filter(has_text="Open").last
        open_button.wait_for(timeout=60_000)
        idle(page)
        open_button.click()
        page.get_by_role("heading", name="guarded run").wait_for(timeout=60_000)
        idle(page)
        bs.snap(page, "guard_02_run_downloads")
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Checkpoint (.pt)").click()
        media_url = download.value.url
        assert "/media/" in media_url and Path(download.value.path()).read_bytes() == CHECKPOINT
        assert page.request.get(media_url).status == 200  # this browser, signed in

        # Without that browser's session: refused, with or without cookies of its own.
        assert status_of(media_url) == 403
        assert status_of(media_url, cookie="kd_browser=guessed-or-stale") == 403
        other = page.context.browser.new_context()
        try:
            stranger = other.new_page()
            stranger.goto(url, wait_until="networkidle")  # a browser of its own, signed out
            assert stranger.request.get(media_url).status == 403
        finally:
            other.close()

        # Signing out withdraws the browser's downloads and uploads too.
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("User name").wait_for(timeout=60_000)
        idle(page)
        assert page.request.get(media_url).status == 403
        assert page.evaluate(UPLOAD_JS, sessions[-1]) == 403


def test_the_guard_rules_without_a_server():
    alive = {"s1", "s2"}
    sessions = SignedInSessions(alive=lambda s: s in alive)
    guard = SignedInOnly(app=None, sessions=sessions)
    sessions.admit("s1", "browser-a")
    assert guard.refusal("/_stcore/upload_file/s1/f", "PUT", None) is None
    assert guard.refusal("/_stcore/upload_file/s2/f", "PUT", "browser-a") == "Sign in before uploading files."
    assert guard.refusal("/_stcore/upload_file/s2/f", "OPTIONS", None) is None  # a CORS preflight
    assert guard.refusal("/media/abc.pt", "GET", "browser-a") is None
    assert guard.refusal("/media/abc.pt", "GET", "browser-b") == "Sign in to download this file."
    assert guard.refusal("/media/abc.pt", "GET", None) == "Sign in to download this file."
    assert guard.refusal("/static/media/font.woff2", "GET", None) is None  # the app's own assets stay public
    alive.discard("s1")  # the session ended (tab closed): its admission goes with it
    assert guard.refusal("/media/abc.pt", "GET", "browser-a") and guard.refusal("/_stcore/upload_file/s1/f", "PUT", None)
