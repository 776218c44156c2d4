#!/usr/bin/env bash
# Installs everything Switchboard needs on a fresh Debian machine with Node 20+ and npm:
# the Debian packages its tests and benchmarks use, the npm dependencies (better-sqlite3
# and node-pty compile their native addons here), and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Switchboard needs Node.js 20 or newer (found $(node -v))." >&2
  exit 1
fi

# Debian packages: nats-server is the peer the benchmarks measure against; protoc, its gRPC Python
# plugin and python3-grpcio run the seed-000 Python client and agent in the interop tests;
# PostgreSQL and MariaDB are the databases the SQL tests query (usually present already); podman
# (with runc and slirp4netns) serves the Docker Engine API the docker tests use, and busybox-static
# is the one program of the image they run (made locally: no registry needed).
apt_missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || apt_missing+=(nats-server)
command -v protoc >/dev/null 2>&1 || apt_missing+=(protobuf-compiler)
command -v grpc_python_plugin >/dev/null 2>&1 || apt_missing+=(protobuf-compiler-grpc)
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || apt_missing+=(python3-grpcio)
/usr/bin/python3 -c 'import google.protobuf' >/dev/null 2>&1 || apt_missing+=(python3-protobuf)
command -v pg_ctlcluster >/dev/null 2>&1 || apt_missing+=(postgresql)
[ -x /usr/sbin/mariadbd ] || apt_missing+=(mariadb-server)
command -v podman >/dev/null 2>&1 || apt_missing+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || apt_missing+=(runc)
command -v slirp4netns >/dev/null 2>&1 || apt_missing+=(slirp4netns)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || apt_missing+=(busybox-static)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  else
    log "missing Debian packages (install them as root): ${apt_missing[*]}"
  fi
fi

# The databases the SQL tests use: start them when they are installed but not running.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5432 && command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  log "starting PostgreSQL"
  for v in /etc/postgresql/*; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
  done
fi
if ! port_open 3306 && [ -x /usr/sbin/mariadbd ] && [ "$(id -u)" -eq 0 ]; then
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 30); do port_open 3306 && break; sleep 1; done
fi

# npm dependencies: reinstall only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] \
  || [ ! -f node_modules/node-pty/build/Release/pty.node ]; then
  log "installing npm dependencies (better-sqlite3 and node-pty compile from source: about a minute)"
  npm ci --no-fund --no-audit
fi

log "building"
npm run --silent build
log "ready: try 'npm run demo', or 'npm test'"
