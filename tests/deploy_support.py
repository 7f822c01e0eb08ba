"""Reading the Dockerfile and docker-compose.yml the way Docker does, for the deployment tests: a service's
command, environment, volumes and ports, so the tests can run exactly that outside Docker."""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CI_OVERRIDE = ROOT / "docker-compose.ci.yml"  # CI's run in Docker (scripts/docker_ci.sh)
DOCKERIGNORE = ROOT / ".dockerignore"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; no "${" inside (innermost first).
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:(?!\$\{)[^}])*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (nested defaults included; `$$` is a literal `$`)."""
    text = text.replace("$$", "\0")

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op and op.endswith("?") and unset:
            raise ValueError(f"{name}: {arg}")
        if unset:
            return arg if op and op.endswith("-") else ""
        return value

    while True:
        new = _VARIABLE.sub(one, text)
        if new == text:
            return new.replace("\0", "$")
        text = new


def compose(env: Mapping[str, str]) -> dict[str, Any]:
    """docker-compose.yml with its variables substituted from `env` (only: the caller's shell is no input)."""
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))


def merge_service(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Compose's merge of a service from an override file: mappings (environment, depends_on…) merge key by key,
    volumes by container path, and any other value (image, command, network_mode…) is replaced."""
    out = dict(base)
    for key, value in extra.items():
        if key == "volumes" and key in out:
            by_target = {_mounts({"volumes": [v]})[0][1]: v for v in out[key]}
            by_target.update({_mounts({"volumes": [v]})[0][1]: v for v in value})
            out[key] = list(by_target.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def compose_with_override(env: Mapping[str, str], override: Path = CI_OVERRIDE) -> dict[str, Any]:
    """docker-compose.yml merged with an override file, both with their variables substituted from `env`."""
    spec = compose(env)
    extra = yaml.safe_load(interpolate(override.read_text(), env))
    for name, service in extra["services"].items():
        spec["services"][name] = merge_service(spec["services"].get(name, {}), service)
    return spec


@dataclass
class Image:
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) for each instruction of a Dockerfile, continuation lines joined."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments may sit between continuation lines too
        current += " " + stripped
        if current.endswith("\\"):
            current = current[:-1]
            continue
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def _words(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def dockerfile(path: Path = DOCKERFILE) -> Image:
    image = Image()
    for keyword, rest in instructions(path.read_text()):
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                image.env[key] = value
        elif keyword == "USER":
            image.user = rest
        elif keyword == "WORKDIR":
            image.workdir = rest
        elif keyword == "VOLUME":
            image.volumes += _words(rest)
        elif keyword == "CMD":
            image.cmd = _words(rest)
        elif keyword == "HEALTHCHECK":
            image.healthcheck = _words(rest.split(" CMD ", 1)[1].strip())
        elif keyword == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            image.copies += args[:-1]
    return image


def dockerignore() -> set[str]:
    return {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def service_env(service: Mapping[str, Any], image: Image) -> dict[str, str]:
    """The environment inside a service's container: the image's ENV, then the service's `environment`."""
    env = dict(image.env)
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    for key, value in raw.items():
        env[key] = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    return env


def service_command(service: Mapping[str, Any], image: Image) -> list[str]:
    command = service.get("command")
    if command is None:
        return list(image.cmd)
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            source, target = item.split(":")[:2]
        else:
            source, target = item.get("source", ""), item["target"]
        out.append((source, target))
    return out


def named_mounts(service: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> named volume."""
    names = set(spec.get("volumes") or {})
    return {target: source for source, target in _mounts(service) if source in names}


def bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the compose file's folder)."""
    return {target: source for source, target in _mounts(service) if source.startswith((".", "/"))}


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    out = {}
    for item in service.get("ports") or []:
        parts = str(item).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def worker_services(spec: Mapping[str, Any]) -> list[str]:
    """Services that run `python -m kdcore worker`, in every profile."""
    return [name for name, s in spec["services"].items()
            if isinstance(s.get("command"), list) and s["command"][1:4] == ["-m", "kdcore", "worker"]]


def database_url(text: str):
    from sqlalchemy.engine import make_url

    return make_url(text)
