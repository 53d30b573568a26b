#!/usr/bin/env bash
# Regenerate the Python code for proto/onecert/v1 from the proto root, so the
# generated imports (`from onecert.v1 import common_pb2`) are right as written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
# protoc finds the mypy-protobuf plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH.
export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"
rm -f proto/onecert/v1/*_pb2*.py proto/onecert/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -I proto --python_out=proto --mypy_out=proto proto/onecert/v1/*.proto
# Service code only for the files that declare a service: a file of shared
# messages (common.proto) would get an empty module that nothing imports.
mapfile -t with_services < <(grep -l '^service ' proto/onecert/v1/*.proto)
"$PY" -m grpc_tools.protoc -I proto --grpc_python_out=proto --mypy_grpc_out=proto "${with_services[@]}"
