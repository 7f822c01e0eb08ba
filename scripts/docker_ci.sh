#!/usr/bin/env bash
# The team deployment built and run for real: installs and starts a Docker engine, builds the project's image
# from the Dockerfile and runs docker-compose.yml's app, a CPU worker and PostgreSQL, then checks them
# (tests/docker_stack_check.py). `.ci/run` calls it; as root on Debian it runs anywhere (it needs no GPU).
#
#   bash scripts/docker_ci.sh [--cold] [--record]
#     --cold    first remove what earlier runs on this machine left to reuse (images, build cache, wheelhouse)
#     --record  write the measured build time and image size into bench/RESULTS.md
#
# What this machine lacks, and what stands in for it:
# - No container registry: the official python and postgres images cannot be pulled. A minimal Debian
#   bookworm is debootstrapped from the apt sources' mirror and imported; on it .ci/docker/ builds a Python 3.11
#   stand-in (the Dockerfile takes it as PYTHON_IMAGE) and a PostgreSQL 15 stand-in (docker-compose.ci.yml).
# - pip inside the build reaches no index: a wheelhouse of requirements.txt is downloaded on the host once and
#   served on 127.0.0.1 to the build, whose pip reads that address from the BuildKit secret `pip.conf` (never a
#   layer). Builds and containers use the host's network and listen on 127.0.0.1 only; no bridge, no NAT.
# - Debian ships Compose v1 (docker-compose 1.29): scripts/compose_for_ci.py hands it docker-compose.yml
#   without the two things v1 refuses (the top-level name, passed with -p instead, and published ports on the
#   host network, which the engine would discard anyway).
#
# Exit status: 0 when the checks passed, or when Docker cannot be installed or started here (then the output
# says so in a line starting "docker_ci: NOT RUN"); non-zero when the build or a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

COLD=0
RECORD=0
for arg in "$@"; do
    case $arg in
        --cold) COLD=1 ;;
        --record) RECORD=1 ;;
        *) echo "usage: $0 [--cold] [--record]" >&2; exit 2 ;;
    esac
done

say() { echo "docker_ci: $*"; }
not_run() { say "NOT RUN: $*"; exit 0; }
now() { date +%s; }
T_START=$(now)

[ "$(id -u)" -eq 0 ] || not_run "installing and starting a Docker engine needs root (CI runs as root)"
command -v apt-get >/dev/null || not_run "no apt-get: Debian's docker.io cannot be installed here"

# Kept between runs on one machine (a fresh CI machine starts without them): the engine's images and build
# cache, and the wheelhouse. Everything that runs lives under RUN_DIR and is stopped at the end.
CACHE=/var/cache/kdstudio-ci
DATA_ROOT=/var/lib/kdstudio-ci/docker
RUN_DIR=/run/kdstudio-ci
export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
DOCKER=/usr/bin/docker  # Debian's client: its BuildKit needs no buildx plugin
export DOCKER_BUILDKIT=1
PROJECT=kdstudio  # docker-compose.yml's `name:`
IMAGE=kdstudio:local  # docker-compose.yml's `image:`
PYTHON_IMAGE=kdstudio-ci/python:3.11-bookworm
POSTGRES_IMAGE=kdstudio-ci/postgres:15-bookworm
MINBASE_IMAGE=kdstudio-ci/debian:bookworm-minbase
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdstudio-docker-ci.XXXXXX")
mkdir -p "$CACHE" "$RUN_DIR"

DOCKERD_PID=""
SERVER_PID=""
cleanup() {
    local rc=$?
    # Containers and volumes of this project only (the checks remove theirs; this catches an interrupted run).
    if [ -n "$DOCKERD_PID" ] || [ -S "$RUN_DIR/docker.sock" ]; then
        local ids
        ids=$($DOCKER ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null || true)
        [ -z "$ids" ] || $DOCKER rm -f $ids >/dev/null 2>&1 || true
        ids=$($DOCKER volume ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null || true)
        [ -z "$ids" ] || $DOCKER volume rm $ids >/dev/null 2>&1 || true
    fi
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID" 2>/dev/null
        say "stopped the Docker engine (pid $DOCKERD_PID)"
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- 1. the engine, Compose and debootstrap from Debian ---------------------------------------------------
T0=$(now)
missing=()
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d (where present) keeps the package from starting a daemon of its own with a bridge network.
    if ! { apt-get update -q >"$WORK/apt.log" 2>&1 \
           && apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1; }; then
        tail -n 20 "$WORK/apt.log"
        not_run "apt-get could not install ${missing[*]}"
    fi
fi
T_INSTALL=$(( $(now) - T0 ))

# ---- 2. the engine: host network only, its own socket and data, stopped at the end ---------------------
if $DOCKER version >/dev/null 2>&1; then
    say "using the Docker engine already listening on $DOCKER_HOST (left running)"
else
    mkdir -p "$DATA_ROOT"
    /usr/sbin/dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
        --pidfile "$RUN_DIR/dockerd.pid" --bridge none --iptables=false --ip6tables=false --ip-masq=false \
        --log-level warn >"$CACHE/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        $DOCKER version >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    if ! $DOCKER version >/dev/null 2>&1; then
        tail -n 20 "$CACHE/dockerd.log"
        kill -0 "$DOCKERD_PID" 2>/dev/null || DOCKERD_PID=""
        not_run "dockerd did not start (its log above)"
    fi
    say "started the Docker engine $($DOCKER version -f '{{.Server.Version}}') (pid $DOCKERD_PID)"
fi
if [ "$COLD" -eq 1 ]; then
    say "--cold: removing cached images, build cache and wheelhouse"
    $DOCKER image rm -f "$IMAGE" "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$MINBASE_IMAGE" >/dev/null 2>&1 || true
    $DOCKER builder prune -af >/dev/null
    rm -rf "$CACHE"/wheelhouse-* "$CACHE/rootfs"
fi

# ---- 3. base images: a debootstrapped Debian, and the Python and PostgreSQL stand-ins on it -------------
T0=$(now)
debian_mirror() {
    # The first Debian archive the apt sources name (deb822 .sources or one-line sources.list).
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
          | grep -E '/debian/?$' | head -n 1 || true)
    [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' \
          | grep -E '/debian/?$' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
if ! $DOCKER image inspect "$MINBASE_IMAGE" >/dev/null 2>&1; then
    mirror=$(debian_mirror)
    say "debootstrap bookworm (minbase) from $mirror"
    rm -rf "$CACHE/rootfs"
    if ! debootstrap --variant=minbase bookworm "$CACHE/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log"
        exit 1
    fi
    rm -rf "$CACHE"/rootfs/var/cache/apt/archives/*.deb "$CACHE"/rootfs/var/lib/apt/lists/*
    tar -C "$CACHE/rootfs" -c . | $DOCKER import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
        - "$MINBASE_IMAGE" >/dev/null
    rm -rf "$CACHE/rootfs"
fi
for standin in python:$PYTHON_IMAGE postgres:$POSTGRES_IMAGE; do
    name=${standin%%:*}
    tag=${standin#*:}
    if ! $DOCKER image inspect "$tag" >/dev/null 2>&1; then
        say "building the $name stand-in $tag"
        if ! $DOCKER build --network host --progress plain --build-arg "BASE=$MINBASE_IMAGE" \
               -f ".ci/docker/$name.Dockerfile" -t "$tag" .ci/docker >"$WORK/$name.log" 2>&1; then
            tail -n 30 "$WORK/$name.log"
            exit 1
        fi
    fi
done
T_BASES=$(( $(now) - T0 ))
if ! $DOCKER run --rm --network none "$MINBASE_IMAGE" true >"$WORK/run.log" 2>&1; then
    cat "$WORK/run.log"
    not_run "the engine started but cannot run a container here"
fi

# ---- 4. the wheelhouse: requirements.txt and the build backend, for Python 3.11 on Linux x86-64 -------------
T0=$(now)
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
key=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
WHEELHOUSE=$CACHE/wheelhouse-$key
if [ ! -f "$WHEELHOUSE/.complete" ]; then
    say "downloading the wheelhouse (pip download -r requirements.txt)"
    find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -name "wheelhouse-$key" -exec rm -rf {} +
    mkdir -p "$WHEELHOUSE"
    # The build backend too (pyproject.toml's build-system): pip builds the project itself with no index.
    # Downloaded for this host's interpreter, which must match the image's (Python 3.11, glibc Linux).
    "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || { say "the wheelhouse needs Python 3.11 on the host, the image's version ($PY is not)"; exit 1; }
    if ! "$PY" -m pip download -q --only-binary :all: -d "$WHEELHOUSE" \
           -r requirements.txt "setuptools>=68" wheel >"$WORK/pip.log" 2>&1; then
        grep -v '^WARNING: Location' "$WORK/pip.log" | tail -n 20
        exit 1
    fi
    touch "$WHEELHOUSE/.complete"
fi
T_WHEELS=$(( $(now) - T0 ))

# ---- 5. the project's image, FROM the Python stand-in, pip reading the wheelhouse --------------------------
SERVER_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$SERVER_PORT" >"$WORK/wheelhouse.log" 2>&1 &
SERVER_PID=$!
printf '[global]\nno-index = true\nfind-links = http://127.0.0.1:%s/\n' "$SERVER_PORT" >"$WORK/pip.conf"
CACHED_BEFORE=$($DOCKER image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || echo none)
say "building $IMAGE (Dockerfile, FROM $PYTHON_IMAGE)"
T0=$(now)
if ! $DOCKER build --network host --progress plain --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
       --secret "id=pip.conf,src=$WORK/pip.conf" -t "$IMAGE" . >"$CACHE/build.log" 2>&1; then
    tail -n 40 "$CACHE/build.log"
    say "the image did not build"
    exit 1
fi
T_BUILD=$(( $(now) - T0 ))
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)  # the machine may be shared: its load beside the time
kill "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
# Whether the dependency layer (torch and the rest) came from the cache or was installed in this build.
if grep -A3 -E 'RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf +pip install --no-cache-dir -r' \
        "$CACHE/build.log" | grep -q CACHED; then
    BUILD_KIND="dependency layer from the build cache"
else
    BUILD_KIND="cold: dependencies installed in this build"
fi
SIZE_BYTES=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
SIZE_GB=$(python3 -c "print(f'{$SIZE_BYTES / 1e9:.2f}')")
say "built $IMAGE in ${T_BUILD} s ($BUILD_KIND); size ${SIZE_GB} GB"
# The secret's contents must not have reached the image.
if $DOCKER run --rm --network none --entrypoint sh "$IMAGE" -c \
        'grep -rl "find-links" /etc/pip.conf /etc/xdg/pip /root/.config/pip 2>/dev/null'; then
    say "the build's pip configuration is in the image"
    exit 1
fi

# ---- 6. the compose deployment and its checks ---------------------------------------------------------------
# docker-compose.yml as Compose v1 can take it with the override (scripts/compose_for_ci.py says what differs).
"$PY" scripts/compose_for_ci.py docker-compose.yml docker-compose.ci.yml "$WORK/docker-compose.yml"
if $DOCKER compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
    compose_version=$($DOCKER compose version | head -n 1)
else
    COMPOSE=(docker-compose)
    compose_version="docker-compose $(docker-compose version --short 2>/dev/null || echo '?') (Compose v1)"
fi
COMPOSE+=(--project-directory "$ROOT" -p "$PROJECT" -f "$WORK/docker-compose.yml" -f "$ROOT/docker-compose.ci.yml")
say "compose: $compose_version"

export KD_CI_COMPOSE="${COMPOSE[*]}"  # no spaces in these paths: mktemp and the checkout's folder
export KD_CI_PG_PORT=$(free_port) KD_CI_HTTP_PORT=$(free_port)
export KD_CI_POSTGRES_IMAGE=$POSTGRES_IMAGE KD_CI_DOCKER=$DOCKER KD_CI_PROJECT=$PROJECT
export KD_SHARED_PASSWORD=ci-team-password POSTGRES_PASSWORD=ci0postgres0password KD_ADMINS=carol
T0=$(now)
set +e
"$PY" -m pytest tests/docker_stack_check.py -p no:cacheprovider -q -rA --durations=8 --junitxml="${KD_CI_REPORTS:-$WORK}/docker.xml"
CHECKS_RC=$?
set -e
T_CHECKS=$(( $(now) - T0 ))
T_TOTAL=$(( $(now) - T_START ))

summary="install ${T_INSTALL} s, base images ${T_BASES} s, wheelhouse ${T_WHEELS} s, image build ${T_BUILD} s \
(${BUILD_KIND}), compose checks ${T_CHECKS} s; ${T_TOTAL} s in all; image ${SIZE_GB} GB"
say "$summary"

if [ "$RECORD" -eq 1 ]; then
    "$PY" - "$T_INSTALL" "$T_BASES" "$T_WHEELS" "$T_BUILD" "$BUILD_KIND" "$T_CHECKS" "$T_TOTAL" "$SIZE_BYTES" \
        "$CHECKS_RC" "$COLD" "$LOAD" <<'PY'
import datetime
import re
import sys
from pathlib import Path

install, bases, wheels, build, kind, checks, total, size, rc, cold, load = sys.argv[1:]
command = "bash scripts/docker_ci.sh" + (" --cold" if cold == "1" else "") + " --record"
today = datetime.date.today().isoformat()
section = f"""<!-- docker_ci -->
## Docker image and compose deployment (`{command}`)

Measured by `scripts/docker_ci.sh` on {today}, as root, on a 2-core machine shared with other work (load
average {load} when the image build ended).
{"Cold: no image, build cache or wheelhouse from an earlier run, as on a fresh CI machine." if cold == "1" else
 "Reusing what earlier runs on this machine left (images, build cache, wheelhouse)."}

| step | seconds |
| --- | ---: |
| install docker.io, docker-compose, debootstrap (0: already installed) | {install} |
| base images: debootstrap bookworm minbase, Python 3.11 and PostgreSQL 15 stand-ins | {bases} |
| wheelhouse: `pip download -r requirements.txt` | {wheels} |
| image build, `kdstudio:local` ({kind}) | {build} |
| compose deployment and its checks (`tests/docker_stack_check.py`, {"passed" if rc == "0" else "FAILED"}) | {checks} |
| whole script, added to CI | {total} |

Image size: {int(size) / 1e9:.2f} GB (`docker image inspect -f '{{{{.Size}}}}' kdstudio:local`: the CUDA build
of torch and its nvidia-* wheels are most of it).
<!-- /docker_ci -->
"""
path = Path("bench/RESULTS.md")
text = path.read_text()
pattern = re.compile(r"<!-- docker_ci -->.*?<!-- /docker_ci -->\n", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
path.write_text(text)
print(f"docker_ci: recorded in {path}")
PY
fi

exit $CHECKS_RC
