# CI's stand-in for the official postgres:15-bookworm image, which CI cannot pull: Debian bookworm's
# PostgreSQL 15 with an entrypoint that does what the official one does (postgres-entrypoint.sh), the data
# in /var/lib/postgresql/data, the server run as the `postgres` user.
ARG BASE=kdstudio-ci/debian:bookworm-minbase
FROM ${BASE}

# No "main" cluster from the package: the entrypoint creates the one cluster in PGDATA on first start.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/#?(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
VOLUME ["/var/lib/postgresql/data"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
