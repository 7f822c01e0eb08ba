"""The team deployment without Docker: the app, a worker and PostgreSQL started exactly as docker-compose.yml
wires them (the same commands, the image's and the service's environment, the same volumes shared), with the
network mapped onto loopback. A user signs in with the shared password in headless Chromium, launches a
digits run from New experiment, and the compose worker (not an embedded one) trains it to completion."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import browser_support as bs
import deploy_support as ds
import pytest
from browser_support import idle

# A backstop only: the waits inside (a PostgreSQL cluster, the app, a training run) have deadlines of their own.
pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.timeout(600)]

PASSWORD = "deploy-test-password"
# What a team would put in .env; everything else keeps the compose file's defaults.
COMPOSE_ENV = {"KD_SHARED_PASSWORD": PASSWORD, "KD_ADMINS": "carol"}
SHOTS = bs.SHOTS


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway cluster from scripts/start_postgres.sh; yields its superuser URL, stops it afterwards."""
    script = ds.ROOT / "scripts" / "start_postgres.sh"
    started = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.fail(f"scripts/start_postgres.sh failed (Debian's postgresql installed?): {started.stderr[-2000:]}")
    url = started.stdout.strip().splitlines()[-1]
    lines = started.stderr.splitlines()
    stop = next((lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if "Stop it with" in line), None)
    assert stop, f"no stop command printed: {started.stderr}"
    try:
        yield url
    finally:
        subprocess.run(["bash", "-c", stop], capture_output=True, timeout=60)


def create_compose_database(superuser_url: str, postgres_env: dict[str, str]) -> None:
    """What the postgres image does on first start: POSTGRES_USER with POSTGRES_PASSWORD owns POSTGRES_DB."""
    from sqlalchemy import create_engine, text

    engine = create_engine(superuser_url, isolation_level="AUTOCOMMIT")
    user, password, db = (postgres_env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    with engine.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{user}" LOGIN PASSWORD :pw').bindparams(pw=password))
        conn.execute(text(f'CREATE DATABASE "{db}" OWNER "{user}"'))
    engine.dispose()


def container_env(service: dict, spec: dict, image: ds.Image, volumes: dict[str, Path], *, pg_port: int,
                  http_port: int, home: Path) -> dict[str, str]:
    """The service's environment with Docker's network and volumes mapped onto this machine."""
    env = ds.service_env(service, image)
    url = ds.database_url(env["KD_DATABASE_URL"])
    assert (url.host, url.port) == ("postgres", 5432), "the store is the compose `postgres` service"
    env["KD_DATABASE_URL"] = url.set(host="127.0.0.1", port=pg_port).render_as_string(hide_password=False)
    for target, volume in ds.named_mounts(service, spec).items():
        for key, value in env.items():
            if value == target or value.startswith(target + "/"):
                env[key] = str(volumes[volume]) + value[len(target):]
    for target, source in ds.bind_mounts(service).items():
        # Bind mounts into the image's source folder are this checkout's own files (cwd below).
        assert target.startswith(image.workdir + "/"), target
        assert (ds.ROOT / source).resolve() == (ds.ROOT / target[len(image.workdir) + 1:]).resolve(), target
    env["STREAMLIT_SERVER_ADDRESS"] = "127.0.0.1"
    env["STREAMLIT_SERVER_PORT"] = str(http_port)
    # What the base image provides; `python` and `streamlit` resolve to this interpreter.
    env.update(PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", HOME=str(home),
               LANG="C.UTF-8", TMPDIR=str(home))
    return env


def host_command(command: list[str]) -> list[str]:
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[0] == "streamlit":
        return [sys.executable, "-m", "streamlit", *command[1:]]
    raise AssertionError(f"unexpected entry point {command[0]!r}")


def test_compose_deployment_trains_a_run_submitted_in_the_app(tmp_path):
    bs.require_chromium()
    from sqlalchemy.engine import make_url

    from kdcore.jobs import RunStore
    from kdcore.jobs.db import dispose_engines
    from kdcore.jobs.testing import wait_until

    spec = ds.compose(COMPOSE_ENV)
    image = ds.dockerfile()
    services = spec["services"]
    volumes = {name: tmp_path / "volumes" / name for name in spec["volumes"]}
    for folder in volumes.values():
        folder.mkdir(parents=True)
    procs: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}

    def start(name: str, env: dict[str, str]) -> subprocess.Popen:
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "w") as log:
            proc = subprocess.Popen(host_command(ds.service_command(services[name], image)), cwd=ds.ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def tails() -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text()[-2500:]}" for n, p in logs.items() if p.exists())

    with postgres_cluster() as superuser_url:
        try:
            create_compose_database(superuser_url, services["postgres"]["environment"])
            pg_port = make_url(superuser_url).port
            http_port = bs.free_port()
            assert ds.published_ports(services["app"]) == {int(image.env["STREAMLIT_SERVER_PORT"]): 8501}
            common = dict(spec=spec, image=image, volumes=volumes, pg_port=pg_port)
            app_env = container_env(services["app"], http_port=http_port, home=tmp_path / "home-app", **common)
            worker_env = container_env(services["worker-gpu0"], http_port=bs.free_port(), home=tmp_path / "home-worker",
                                       **common)
            for env in (app_env, worker_env):
                Path(env["HOME"]).mkdir()
            assert app_env["KD_DATABASE_URL"] == worker_env["KD_DATABASE_URL"]
            assert app_env["KD_HOME"] == worker_env["KD_HOME"] == str(volumes["runs"])

            worker = start("worker-gpu0", worker_env)
            app = start("app", app_env)
            url = f"http://127.0.0.1:{http_port}"
            bs.wait_healthy(url, app, log=logs["app"], timeout_s=90)
            # The image's own HEALTHCHECK command agrees.
            check = subprocess.run(host_command(image.healthcheck), env=app_env, capture_output=True, timeout=30)
            assert check.returncode == 0, check.stderr

            store = RunStore(app_env["KD_DATABASE_URL"])
            with bs.chromium_page() as page:
                page.goto(url, wait_until="networkidle")
                page.get_by_label("Your name").wait_for(timeout=60_000)
                idle(page)
                # Signed out: the login form and nothing else, not even the page list.
                assert page.locator('[data-testid="stSidebarNav"]').count() == 0
                assert page.get_by_role("button", name="Launch").count() == 0
                page.get_by_label("Your name").fill("alice")
                page.get_by_label("Team password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                nav = page.locator('[data-testid="stSidebarNav"]')
                nav.wait_for(timeout=60_000)
                idle(page)
                nav.get_by_text("New experiment", exact=True).click()
                page.get_by_role("heading", name="New experiment").first.wait_for(timeout=60_000)
                idle(page)
                epochs = page.get_by_label("Epochs", exact=True)
                epochs.fill("2")
                epochs.press("Enter")
                idle(page)
                page.get_by_role("button", name="Launch", exact=True).click()

                (run,) = wait_until(store.list_runs, 60, "the launched run in the store", poll_s=0.5,
                                    on_timeout=tails)
                assert run.owner == "alice" and run.spec.dataset.name == "digits" and run.spec.epochs == 2
                # The app opens the new run's live view (same session: a reload would mean signing in again).
                page.get_by_role("heading", name=run.name).wait_for(timeout=60_000)
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline and not store.get(run.id).is_terminal:
                    time.sleep(1)
                done = store.get(run.id)
                assert done.status.value == "completed", f"{done.status} {done.error}\n{tails()}"
                # Trained by the compose worker process, not by an embedded worker of the app.
                (trained_by,) = [w for w in store.workers(alive_only=False) if w.id == done.worker_id]
                assert trained_by.pid == worker.pid
                assert not (volumes["runs"] / "worker.pid").exists()
                assert (volumes["runs"] / "runs" / run.id / "checkpoint.pt").is_file()
                # The live view, reading the shared store, turns to completed by itself.
                page.locator('[data-testid="stMain"]').get_by_text("completed").first.wait_for(timeout=30_000)
                idle(page)
                SHOTS.mkdir(exist_ok=True)
                page.screenshot(path=str(SHOTS / "deploy_run_completed.png"), full_page=True)
            assert app.poll() is None and worker.poll() is None, tails()
        except BaseException:
            print(tails())
            raise
        finally:
            for proc in procs:
                bs.stop(proc, timeout_s=20)
            dispose_engines()
