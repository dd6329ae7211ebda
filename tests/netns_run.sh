#!/usr/bin/env bash
# The outer no-egress guard of the test suite: runs pytest in a fresh network namespace whose only
# interface is loopback, so nothing any process of the run does (native code, uvloop, libpq, the
# browser included) can reach another machine; the Python guard (tests/egress_guard.py) stays on
# for precise messages. Services the tests use stay reachable: Redis is started inside the
# namespace (private, no persistence), the embedded PostgreSQL listens on a Unix socket only.
#
#   tests/netns_run.sh [pytest arguments]          (what `make test` runs)
#
# Where no namespace can be made (no `unshare`, not root), it says so loudly and runs the suite
# with the Python guard only; under CI=true it fails instead.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
SELF="$ROOT/tests/netns_run.sh"

say() { printf '%s\n' "$*" >&2; }

only_loopback() {
    # /proc/net is per network namespace: its interfaces are those this process can use.
    [ "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')" = "lo " ]
}

loopback_up() {
    if command -v ip >/dev/null 2>&1; then
        ip link set lo up
    else
        "$PY" - <<'EOF'
import fcntl, socket, struct
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
EOF
    fi
}

redis_ping() {
    "$PY" - <<'EOF'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        sys.exit(0 if sock.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
EOF
}

inside() {
    # A private sysfs, so /sys/class/net shows this namespace's interfaces too.
    mount -t sysfs sysfs /sys 2>/dev/null || say "netns_run: could not remount /sys (only /proc/net shows the namespace)"
    loopback_up
    if ! only_loopback; then
        say "netns_run: the namespace has interfaces besides loopback; refusing to run"
        exit 1
    fi
    export RAG_NETNS=loopback-only
    local redis_pid="" redis_dir=""
    if command -v redis-server >/dev/null 2>&1; then
        redis_dir=$(mktemp -d -t rag-test-redis-XXXXXX)
        redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$redis_dir" --logfile "$redis_dir/redis.log" --daemonize no &
        redis_pid=$!
        for _ in $(seq 50); do redis_ping && break; sleep 0.2; done
        redis_ping || say "netns_run: redis-server did not answer; see $redis_dir/redis.log"
    else
        say "netns_run: no redis-server here: the Redis broker tests will skip (fail under CI=true)"
    fi
    local rc=0
    "$PY" -m pytest "$@" || rc=$?
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        rm -rf "$redis_dir"
    fi
    exit "$rc"
}

if [ "${1:-}" = "--inside" ]; then
    shift
    inside "$@"
fi

if [ "${RAG_NETNS:-}" = "loopback-only" ] && only_loopback; then
    exec "$PY" -m pytest "$@"  # already inside (a nested call)
fi

# A plain network + mount namespace, which needs root (CI runs as root). Not an unprivileged
# user namespace (`unshare -rn`): there the embedded PostgreSQL, seeing uid 0, would try to switch
# to its own system user, which such a namespace cannot map.
if command -v unshare >/dev/null 2>&1 && unshare --net --mount true 2>/dev/null; then
    exec unshare --net --mount -- bash "$SELF" --inside "$@"
fi

say ""
say "################################################################################"
say "#  NO NETWORK NAMESPACE: the outer no-egress guard is OFF for this run.        #"
say "#  \`unshare --net --mount\` failed here (it needs root).                        #"
say "#  Only the Python socket guard is active; native code is not covered.          #"
say "################################################################################"
say ""
if [ "${CI:-}" = "true" ]; then
    say "netns_run: CI=true: refusing to run the suite without the outer guard"
    exit 1
fi
exec "$PY" -m pytest "$@"
