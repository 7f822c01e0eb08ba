"""The team deployment in Docker, for real: docker-compose.yml's app, a CPU worker and PostgreSQL, each in its
container from the images CI built, with docker-compose.ci.yml keeping them on the host's loopback.

scripts/docker_ci.sh runs this module after starting a Docker engine and building the images; it passes the
compose command and the ports in KD_CI_* variables. Its name keeps it out of the default test collection,
which must pass on machines without a Docker engine (tests/test_deploy.py runs the same deployment outside
Docker there). Every container and volume it creates is removed at the end, by id."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import browser_support as bs
import pytest
from browser_support import idle

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.timeout(600)]

SERVICES = ["postgres", "app", "worker-cpu"]
USER = "alice"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this module through scripts/docker_ci.sh")
    return value


@dataclass
class Stack:
    """The compose project as the checks see it: commands, addresses, and what was created (for cleanup)."""
    compose: list[str]
    docker: str
    project: str
    http_port: int
    database_url: str
    password: str
    containers: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            pytest.fail(f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def compose_run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run(*self.compose, *args, check=check, timeout=timeout)

    def up(self, *services: str) -> None:
        self.compose_run("up", "-d", "--no-build", *services)
        self.remember()

    def remember(self) -> None:
        """Note the project's containers and volumes (created or not started too), to remove them at the end."""
        label = f"label=com.docker.compose.project={self.project}"
        self.containers |= set(self.run(self.docker, "ps", "-aq", "--filter", label).stdout.split())
        self.volumes |= set(self.run(self.docker, "volume", "ls", "-q", "--filter", label).stdout.split())

    def container(self, service: str) -> str:
        (cid,) = self.compose_run("ps", "-q", service).stdout.split()
        return cid

    def inspect(self, cid: str, template: str) -> str:
        return self.run(self.docker, "inspect", "-f", template, cid).stdout.strip()

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.docker, "exec", self.container(service), *command, check=check)

    def logs(self) -> str:
        return self.compose_run("logs", "--no-color", "--tail", "60", check=False).stdout

    def wait_healthy(self, timeout_s: float = 300) -> str:
        """The app container's health as Docker's HEALTHCHECK reports it, once it leaves `starting`."""
        cid = self.container("app")
        deadline = time.monotonic() + timeout_s
        status = "starting"
        while time.monotonic() < deadline:
            status = self.inspect(cid, "{{.State.Health.Status}}")
            if status != "starting":
                break
            time.sleep(2)
        return status

    def processes(self, service: str) -> list[tuple[int, int, str]]:
        """(uid, host pid, command line) of each process in a service's container, as `docker top` lists them."""
        out = self.run(self.docker, "top", self.container(service), "-eo", "uid,pid,args").stdout.splitlines()
        rows = []
        for line in out[1:]:
            uid, pid, args = line.split(None, 2)
            rows.append((int(uid), int(pid), args))
        return rows

    def remove_everything(self) -> None:
        for cid in sorted(self.containers):
            self.run(self.docker, "rm", "-f", "-v", cid, check=False)
        for volume in sorted(self.volumes):
            self.run(self.docker, "volume", "rm", "-f", volume, check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    pg_port = int(_env("KD_CI_PG_PORT"))
    s = Stack(compose=shlex.split(_env("KD_CI_COMPOSE")), docker=_env("KD_CI_DOCKER"), project=_env("KD_CI_PROJECT"),
              http_port=int(_env("KD_CI_HTTP_PORT")), password=_env("KD_SHARED_PASSWORD"),
              database_url=f"postgresql+psycopg2://kd:{_env('POSTGRES_PASSWORD')}@127.0.0.1:{pg_port}/kdstudio")
    leftover = s.run(s.docker, "ps", "-aq", "--filter", f"label=com.docker.compose.project={s.project}").stdout
    assert not leftover.split(), f"containers of an earlier run are still there: {leftover.split()}"
    try:
        s.up(*SERVICES)
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.remove_everything()
        from kdcore.jobs.db import dispose_engines

        dispose_engines()


def namespace_pid(host_pid: int) -> int:
    """A process's pid inside its container's pid namespace (the last NSpid field)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


def sign_in(page, stack: Stack) -> None:
    page.goto(stack.url, wait_until="networkidle")
    page.get_by_label("Your name").wait_for(timeout=60_000)
    idle(page)
    page.get_by_label("Your name").fill(USER)
    page.get_by_label("Team password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=60_000)
    idle(page)


def test_the_image_health_check_turns_healthy_and_the_health_endpoint_answers(stack):
    status = stack.wait_healthy()
    assert status == "healthy", f"app container health: {status}\n{stack.logs()}"
    with urllib.request.urlopen(stack.url + "/_stcore/health", timeout=10) as response:
        assert (response.status, response.read().decode().strip()) == (200, "ok")
    # The workers have no web server: their health check is off, and they are simply running.
    worker = stack.container("worker-cpu")
    assert stack.inspect(worker, "{{.State.Status}}") == "running"
    assert stack.inspect(worker, "{{if .State.Health}}{{.State.Health.Status}}{{end}}") == ""


def test_the_containers_run_as_the_non_root_user(stack):
    for service in ("app", "worker-cpu"):
        cid = stack.container(service)
        assert stack.inspect(cid, "{{.Config.User}}") == "1000:1000", service
        assert stack.exec(service, "id", "-un").stdout.strip() == "kd", service
        uids = {uid for uid, _, _ in stack.processes(service)}
        assert uids == {1000}, f"{service}: every process runs as uid 1000, not {uids}"
        # The source is read-only to the app; its data volume is its own.
        assert stack.exec(service, "test", "-w", "/opt/kdstudio/kdcore", check=False).returncode != 0, service
        assert stack.exec(service, "test", "-w", "/srv/kdstudio").returncode == 0, service


def test_the_code_the_containers_run_is_compiled(stack):
    """`python -m kdcore` and the app import the working folder's copy (it comes first on sys.path): its bytecode
    is cached at build time, since the containers never write it."""
    probe = "import os, kdcore.train.trainer as m; print(m.__file__, os.path.isfile(m.__cached__))"
    for service in ("app", "worker-cpu"):
        assert stack.exec(service, "python", "-c", probe).stdout.split() == [
            "/opt/kdstudio/kdcore/train/trainer.py", "True"], service


def test_the_network_stays_on_loopback(stack):
    for service in SERVICES:
        assert stack.inspect(stack.container(service), "{{.HostConfig.NetworkMode}}") == "host", service
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    for port in (stack.http_port, int(os.environ["KD_CI_PG_PORT"])):
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()
                     if line.split()[3].rsplit(":", 1)[1] == str(port)}
        assert addresses == {"127.0.0.1"}, f"port {port} listens on {addresses}"


@pytest.fixture(scope="module")
def completed_run(stack):
    """A digits run launched from New experiment in the app's container, trained by the worker container."""
    from kdcore.jobs import RunStore

    assert stack.wait_healthy() == "healthy", stack.logs()
    store = RunStore(stack.database_url)
    with bs.chromium_page() as page:
        sign_in(page, stack)
        nav = page.locator('[data-testid="stSidebarNav"]')
        nav.get_by_text("New experiment", exact=True).click()
        page.get_by_role("heading", name="New experiment").first.wait_for(timeout=60_000)
        idle(page)
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("2")
        epochs.press("Enter")
        idle(page)
        page.get_by_role("button", name="Launch", exact=True).click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store.list_runs():
            time.sleep(0.5)
        (run,) = store.list_runs()
        page.get_by_role("heading", name=run.name).wait_for(timeout=60_000)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not store.get(run.id).is_terminal:
            time.sleep(1)
        done = store.get(run.id)
        assert done.status.value == "completed", f"{done.status} {done.error}\n{stack.logs()}"
        # The live view, reading the shared store, turns to completed by itself.
        bs.SHOTS.mkdir(exist_ok=True)
        try:
            page.locator('[data-testid="stMain"]').get_by_text("completed").first.wait_for(timeout=120_000)
        finally:
            page.screenshot(path=str(bs.SHOTS / "docker_run_completed.png"), full_page=True)
    return store, done


def test_a_digits_run_from_the_app_trains_on_the_worker_container(stack, completed_run):
    store, run = completed_run
    assert run.owner == USER and run.spec.dataset.name == "digits" and run.spec.epochs == 2
    # Trained by the worker container's process: the store's worker pid is that process's pid in the
    # worker container, and no process of the app's container is a worker.
    (worker,) = [w for w in store.workers(alive_only=False) if w.id == run.worker_id]
    in_worker = [pid for _, pid, args in stack.processes("worker-cpu") if "kdcore worker" in args]
    assert worker.pid in {namespace_pid(pid) for pid in in_worker}, (worker, in_worker)
    assert not [args for _, _, args in stack.processes("app") if "kdcore worker" in args]
    # Its artifacts are on the shared `runs` volume, which the app's container sees too.
    stack.exec("app", "test", "-f", f"/srv/kdstudio/runs/{run.id}/checkpoint.pt")


def test_runs_and_the_database_survive_down_and_up(stack, completed_run):
    from kdcore.jobs import RunStore
    from kdcore.jobs.db import dispose_engines

    _, run = completed_run
    dispose_engines()  # the server goes away with its container
    stack.compose_run("down")  # no -v: the named volumes stay
    assert stack.compose_run("ps", "-q").stdout.split() == []
    volumes = set(stack.run(stack.docker, "volume", "ls", "-q").stdout.split())
    assert {v for v in stack.volumes if v.endswith(("_runs", "_pgdata"))} <= volumes
    assert any(v.endswith("_pgdata") for v in stack.volumes) and any(v.endswith("_runs") for v in stack.volumes)

    stack.up(*SERVICES)
    assert stack.wait_healthy() == "healthy", stack.logs()
    again = RunStore(stack.database_url).get(run.id)
    assert again.status.value == "completed" and again.name == run.name
    stack.exec("app", "test", "-f", f"/srv/kdstudio/runs/{run.id}/checkpoint.pt")
    with bs.chromium_page() as page:
        sign_in(page, stack)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Runs", exact=True).click()
        # The runs table is a canvas grid; its cells are mirrored in an accessible (hidden) table.
        page.locator('[data-testid="stMain"] [role="gridcell"]').get_by_text(run.name, exact=True).first.wait_for(
            state="attached", timeout=60_000)
        idle(page)
        page.screenshot(path=str(bs.SHOTS / "docker_runs_after_restart.png"), full_page=True)


def test_the_gpu_worker_reservation(stack, capsys):
    """worker-gpu0 as docker-compose.yml defines it, one reserved NVIDIA device. Where the engine has no GPU
    (no NVIDIA runtime) it must refuse for exactly that reason, and the output says the reservation did not
    run here; where it starts, its device must be visible to torch."""
    result = stack.compose_run("up", "-d", "--no-build", "--no-deps", "worker-gpu0", check=False)
    stack.remember()  # a container that was created but could not start is removed at the end too
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        reasons = [line.strip() for line in output if "nvidia" in line.lower()]
        assert reasons, "\n".join(output)  # refused for another reason than the device: a real failure
        message = reasons[-1]
        with capsys.disabled():
            print(f"\ndocker_ci: GPU reservation NOT RUN here (no NVIDIA runtime in this engine): {message}")
        return
    probe = stack.exec("worker-gpu0", "python", "-c", "import torch; print(torch.cuda.device_count())")
    with capsys.disabled():
        print(f"\ndocker_ci: GPU reservation ran: worker-gpu0 sees {probe.stdout.strip()} CUDA device(s)")
    assert probe.stdout.strip() == "1"
