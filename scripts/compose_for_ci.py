"""Write docker-compose.yml the way scripts/docker_ci.sh hands it to Compose together with docker-compose.ci.yml.

Two differences, both for Debian's Compose v1 (docker-compose 1.29), which CI has in place of Compose v2:
- no top-level `name:` (v1 predates it and refuses the file; the script passes the same name with -p);
- no published ports on the services that the override puts on the host's network: Docker Engine discards
  them there anyway, but v1's client library refuses the combination outright.
Everything else is the file as users run it (variables are left for Compose to substitute).

    python scripts/compose_for_ci.py docker-compose.yml docker-compose.ci.yml OUT
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


def for_ci(main: dict, override: dict) -> dict:
    out = {key: value for key, value in main.items() if key != "name"}
    services = {name: dict(service) for name, service in main["services"].items()}
    for name, extra in (override.get("services") or {}).items():
        if name in services and (extra or {}).get("network_mode") == "host":
            services[name].pop("ports", None)
    out["services"] = services
    return out


def main(argv: list[str]) -> int:
    main_file, override_file, out_file = (Path(a) for a in argv)
    adapted = for_ci(yaml.safe_load(main_file.read_text()), yaml.safe_load(override_file.read_text()))
    out_file.write_text(yaml.safe_dump(adapted, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
