# Shared by the bench scripts.

# Installs a Debian package when its command is missing.
need() { # command, package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 from Debian" >&2
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# A scratch directory, $WORK, and the servers started for the run, whose pids go in $PIDS:
# the servers are stopped and the directory removed when the script exits, however it
# exits.
scratch_and_servers() {
    WORK=$(mktemp -d)
    PIDS=()
    trap stop_servers_and_scratch EXIT
}

stop_servers_and_scratch() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
