#!/usr/bin/env bash
# Generates into OUTDIR, with Debian's protoc and grpc_python_plugin, the Python gRPC code of
# - seed 000's contract (app_pb2.py, app_pb2_grpc.py) from proto/seed000/app.proto, the same file the hub is
#   generated from, for seed_client.py and seed_agent.py;
# - seed 003's GridAgent (agent_pb2.py, agent_pb2_grpc.py) from seed003/agent.proto, the seed document's own
#   text, for grid_agent_client.py.
# All run by /usr/bin/python3.
# Usage: test/python/generate.sh OUTDIR
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 OUTDIR (the directory that receives app_pb2.py and app_pb2_grpc.py)" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! command -v protoc >/dev/null 2>&1; then
  echo "$0: protoc is not installed: install the Debian package protobuf-compiler (or run 'npm run setup')" >&2
  exit 1
fi
if ! plugin=$(command -v grpc_python_plugin); then
  echo "$0: grpc_python_plugin is not installed: install the Debian package protobuf-compiler-grpc (or run 'npm run setup')" >&2
  exit 1
fi

mkdir -p "$out"
protoc -I "$here/../../proto/seed000" --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" app.proto
protoc -I "$here/seed003" --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" agent.proto
