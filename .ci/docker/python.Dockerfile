# CI's stand-in for the official python:3.11-slim-bookworm base, which CI cannot pull (no container registry
# is reachable there): Debian bookworm's own Python 3.11 on the minimal system that scripts/docker_ci.sh
# debootstraps, set up to behave like the official image for the project's Dockerfile: `python` and `pip` on
# PATH, pip installing into the system interpreter (no "externally managed" guard), a UTF-8 locale.
# Unpinned on purpose: it follows the Debian release the mirror serves, like the official tag does.
ARG BASE=kdstudio-ci/debian:bookworm-minbase
FROM ${BASE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED

ENV LANG=C.UTF-8
CMD ["python3"]
