# Shared by the bench scripts: install a Debian package when its command is missing.
need() { # command, package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 from Debian" >&2
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
