#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, the server on a
# free 127.0.0.1 port (and a socket in that directory only), trust authentication, removed
# afterwards. Run as root, the cluster belongs to the `postgres` user (PostgreSQL refuses root).
# Sourced by tests/run-all.sh; by hand:
#   source tests/pg-cluster.sh && pg_cluster_start && export SAFETAKE_TEST_DATABASE_URL="$PG_TEST_URL"
#   ... cargo test --release --test api ...
#   pg_cluster_stop

pg_bin_dir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/initdb" ]] || return 1
    echo "$dir"
}

# Installs Debian's PostgreSQL server when it is missing (the binary itself needs no libpq: it
# is built in, see Cargo.toml).
pg_install() {
    pg_bin_dir >/dev/null && return 0
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # Debian's package starts its own cluster on 5432; the tests use their own, elsewhere.
    command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
    done
    pg_bin_dir >/dev/null
}

pg_free_port() {
    local port
    for _ in $(seq 1 50); do
        # Below the kernel's ephemeral range (32768-60999 here), which bind(0) and outgoing
        # connections draw from: no test server or client can take it in the meantime.
        port=$(( 20000 + RANDOM % 12000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# As the cluster's owner: root hands it to `postgres`.
pg_as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Starts the cluster; sets PG_CLUSTER_DIR, PG_PORT and PG_TEST_URL (the admin URL the suites
# take as SAFETAKE_TEST_DATABASE_URL).
pg_cluster_start() {
    local bin
    bin="$(pg_bin_dir)" || { echo "PostgreSQL is not installed" >&2; return 1; }
    PG_CLUSTER_DIR="$(mktemp -d)"
    chmod 755 "$PG_CLUSTER_DIR"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$PG_CLUSTER_DIR"
    PG_PORT="$(pg_free_port)"
    pg_as_owner "$bin/initdb" -D "$PG_CLUSTER_DIR/data" -U safetake -A trust -E UTF8 --locale=C >/dev/null
    # Durability of the throwaway cluster itself does not matter (fsync off); the server's own
    # promises are about its audio files, which it fsyncs itself.
    pg_as_owner "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -w -t 30 \
        -o "-p $PG_PORT -k $PG_CLUSTER_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
    PG_TEST_URL="postgres://safetake@127.0.0.1:$PG_PORT/postgres"
    export PG_CLUSTER_DIR PG_PORT PG_TEST_URL
}

# Stops the cluster (immediately: it is thrown away) and removes its directory.
pg_cluster_stop() {
    [[ -n "${PG_CLUSTER_DIR:-}" && -d "$PG_CLUSTER_DIR" ]] || return 0
    local bin
    if bin="$(pg_bin_dir)"; then
        pg_as_owner "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_CLUSTER_DIR"
    PG_CLUSTER_DIR=""
}

# Restarts the cluster (fast: every connection is dropped), with the options it was started with.
pg_cluster_restart() {
    pg_as_owner "$(pg_bin_dir)/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -m fast -w -t 30 restart >/dev/null
}
