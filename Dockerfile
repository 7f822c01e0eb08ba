# KD Studio: one image for the dashboard and the workers of a team deployment (see docker-compose.yml).
#   docker build -t kdstudio .
#   docker run -p 8501:8501 kdstudio                          # dashboard (+ its embedded worker when alone)
#   docker run --gpus device=0 kdstudio python -m kdcore worker   # a worker for one GPU
#
# Base image: Debian bookworm's slim Python 3.11 plus torch from PyPI, not pytorch/pytorch (Ubuntu + conda):
# - PyPI's Linux torch wheels carry CUDA 12 and cuDNN themselves (as nvidia-* wheels) and fall back to the
#   CPU where no GPU driver is present, so this one image serves GPU workers and CPU-only hosts alike;
#   a GPU host needs only the NVIDIA driver and container toolkit, no CUDA install;
# - the versions are exactly requirements.txt's pins (torch==2.14.1, torchvision==0.29.1), the builds the
#   test suite runs against, rather than whatever a prebuilt image bundles;
# - Debian's dataset-fashion-mnist package bakes Fashion-MNIST in where kdcore looks for it.
# PYTHON_IMAGE exists for CI alone, which reaches no registry and builds FROM a local stand-in
# (scripts/docker_ci.sh); everyone else builds FROM the official image below.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# STREAMLIT_SERVER_*: the default command listens on 0.0.0.0:8501 without a browser; HEALTHCHECK reads the
# same port. KD_HOME (store, run artifacts, uploads) and KD_DATA_DIR (downloaded datasets) are volumes.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    KD_HOME=/srv/kdstudio \
    KD_DATA_DIR=/srv/datasets \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# Fashion-MNIST's IDX files land in /usr/share/datasets/fashion-mnist (kdcore.paths.DEBIAN_FASHION_MNIST).
# The non-root user owns the volumes' mount points; a new named volume takes that owner on first use.
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --no-log-init --uid 1000 --user-group kd \
    && mkdir -p /srv/kdstudio /srv/datasets \
    && chown kd:kd /srv/kdstudio /srv/datasets

WORKDIR /opt/kdstudio

# Dependencies before the source: the multi-gigabyte torch layer is reused while only the code changes.
# (requirements.txt includes Authlib, which Streamlit's OpenID Connect login, st.login, needs.)
# A pip configuration handed to the build as the BuildKit secret `pip.conf` (a mirror, a CA bundle's path, a
# wheelhouse: `docker build --secret id=pip.conf,src=FILE`) is read during these steps only and never lands
# in a layer; without one, pip installs from PyPI.
COPY requirements.txt ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    pip install --no-cache-dir -r requirements.txt

# The project, installed; app/, pages/ and .streamlit/config.toml stay here because
# `streamlit run app/main.py` runs from this folder. Source files stay root-owned: read-only to the app.
COPY pyproject.toml README.md ./
COPY kdcore/ kdcore/
COPY app/ app/
COPY pages/ pages/
COPY examples/ examples/
COPY .streamlit/config.toml .streamlit/config.toml
# Compiled here as well: the working folder comes first on sys.path, so `python -m kdcore` and the app import
# these copies, and with PYTHONDONTWRITEBYTECODE (and root-owned files) nothing would ever cache their bytecode:
# every process would compile them again at start-up.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    pip install --no-cache-dir --no-deps . \
    && python -m compileall -q kdcore app pages

# Numeric, so that a host or an orchestrator (runAsNonRoot) can tell it is not root: the `kd` user above.
USER 1000:1000
VOLUME ["/srv/kdstudio", "/srv/datasets"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ.get('STREAMLIT_SERVER_PORT', '8501'), timeout=4)"]

# The dashboard; the same image runs a worker with `python -m kdcore worker` as its command.
CMD ["streamlit", "run", "app/main.py"]
