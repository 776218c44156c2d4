#!/usr/bin/env bash
# Installs everything Switchboard needs on a fresh Debian machine with Node.js and npm: a Node 24
# when the machine's is older than 22, the Debian packages its tests and benchmarks use, the npm
# dependencies (better-sqlite3 and node-pty compile their native addons here), and the build.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Node: Switchboard runs on Node.js 22 and 24 LTS. When the machine's node is older, the checkout
# gets its own: a pinned Node 24 from the npm registry's node-linux-<arch> package (the registry is
# reachable wherever npm is) in .runtime/, with the headers node-gyp compiles the native addons
# against. node_modules/.bin/node points at it, so every npm script of the checkout (and npx), which
# npm runs with node_modules/.bin first on the PATH, runs on it; the CLI started by an older node
# hands over to it (src/cli/main.ts). On a machine with Node 22 or newer nothing is fetched.
RUNTIME_VERSION=24.22.3
declare -A RUNTIME_INTEGRITY=(
  [x64]=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
  [arm64]=sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==
)
node_link=node_modules/.bin/node

# The machine's node: the first on the PATH outside this checkout (`npm run` puts node_modules/.bin,
# where a link to the checkout's own may be, first).
machine_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF -e "$PWD/node_modules/.bin" -e "$PWD/.runtime/bin" | paste -sd:)
machine_node=$(PATH="$machine_path" command -v node || true)
if [ -z "$machine_node" ] || ! command -v npm >/dev/null 2>&1; then
  echo "Switchboard's setup needs node and npm on the PATH (Node 22 or newer; with an older one, setup fetches Node 24)." >&2
  exit 1
fi
machine_version=$("$machine_node" -v)
node_major=$("$machine_node" -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -ge 22 ]; then
  # The machine's node will do. A link left by an earlier setup on an older node goes.
  export PATH="$machine_path"
  if [ -L "$node_link" ] && [[ "$(readlink "$node_link")" == *.runtime/* ]]; then rm "$node_link"; fi
else
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *)
      echo "Switchboard needs Node.js 22 or newer (found $machine_version), and setup has no Node for $(uname -m): install Node 22 or 24." >&2
      exit 1
      ;;
  esac
  runtime=".runtime/node-v$RUNTIME_VERSION-linux-$arch"
  if [ ! -x "$runtime/bin/node" ]; then
    log "the machine's Node is $machine_version; fetching Node $RUNTIME_VERSION (npm package node-linux-$arch, 50 MB) into $runtime"
    mkdir -p .runtime
    fetch=$(mktemp -d .runtime/fetch.XXXXXX)
    trap 'rm -rf "$fetch"' EXIT
    # npm checks the tarball against the sha512 the registry lists for this version (EINTEGRITY
    # otherwise); the check below holds it to the sha512 pinned here as well.
    npm pack --silent --pack-destination "$fetch" "node-linux-$arch@$RUNTIME_VERSION" >/dev/null
    tarball="$fetch/node-linux-$arch-$RUNTIME_VERSION.tgz"
    got=$(node -e 'const c = require("node:crypto"), fs = require("node:fs");
      process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tarball")
    if [ "$got" != "${RUNTIME_INTEGRITY[$arch]}" ]; then
      echo "node-linux-$arch@$RUNTIME_VERSION from the registry is not the one pinned in scripts/setup.sh ($got); not using it." >&2
      exit 1
    fi
    mkdir "$fetch/node"
    tar -xzf "$tarball" -C "$fetch/node" --strip-components=1
    rm -rf "$runtime"
    mv "$fetch/node" "$runtime"
    rm -rf "$fetch"
    trap - EXIT
  fi
  mkdir -p .runtime/bin
  ln -sfn "../node-v$RUNTIME_VERSION-linux-$arch/bin/node" .runtime/bin/node
  # Setup's own steps run on it too: npm (the machine's, started through its `#!/usr/bin/env node`),
  # and node-gyp, which compiles against its headers instead of downloading them.
  export PATH="$PWD/.runtime/bin:$machine_path"
  export npm_config_nodedir="$PWD/$runtime"
fi

# Debian packages: nats-server carries the messages between the hubs of a cluster (and is the peer
# the benchmarks measure against); protoc, its gRPC Python
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

# NATS: what the hubs of a cluster talk through (the cluster tests), on its standard port.
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
if ! port_open 4222 && [ -x "$nats_bin" ] && [ "$(id -u)" -eq 0 ]; then
  log "starting NATS"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$nats_bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 30); do port_open 4222 && break; sleep 1; done
fi

# npm dependencies: reinstall when the lockfile changed since the last install, or when the native
# addons do not load on this Node (never built, or built for another).
native_addons_load() {
  node -e 'new (require("better-sqlite3"))(":memory:").close(); require("node-pty")' >/dev/null 2>&1
}
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || ! native_addons_load; then
  log "installing npm dependencies on Node $(node -v) (better-sqlite3 and node-pty compile from source: about a minute)"
  npm ci --no-fund --no-audit
fi
if [ -n "${runtime:-}" ]; then
  ln -sfn ../../.runtime/bin/node "$node_link"
fi

log "building"
npm run --silent build
if [ -n "${runtime:-}" ]; then
  log "npm scripts and the CLI of this checkout run on Node $RUNTIME_VERSION ($runtime), not the machine's $machine_version"
fi
log "ready: try 'npm run demo', or 'npm test'"
