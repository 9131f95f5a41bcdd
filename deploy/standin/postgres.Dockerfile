# A stand-in for the official postgres image, for deploy/container-test.sh only (no registry is reachable on the
# project's machines): Debian's PostgreSQL 15 on the debootstrapped bookworm root file system, with an entry
# point that reads the official image's variables (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA), so
# that deploy/compose.yaml runs unchanged on postgres:16 from Docker Hub.
ARG ROOTFS=adain-standin-rootfs:bookworm
FROM ${ROOTFS}

# No main cluster from the package: the entry point makes one in PGDATA on first start.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15=15.* \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME ["/var/lib/postgresql/data"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
