#!/usr/bin/env bash
# Write the official ONNX backend node tests (the conformance cases) and print their folder.
#
#   DIR=$(scripts/conformance-cases.sh)
#
# Cases go to $DEED_CONFORMANCE_DIR (default: target/onnx-node-tests) and are written
# by ../shared/tools/onnx-node-tests.py (override: $DEED_NODE_TESTS_TOOL) with the
# venv's onnx. They are regenerated only when the onnx version or the generator
# changed, and written to a temporary folder first so an interrupted run never leaves
# a half-written set behind.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${DEED_CONFORMANCE_DIR:-$repo/target/onnx-node-tests}"
tool="${DEED_NODE_TESTS_TOOL:-$repo/../shared/tools/onnx-node-tests.py}"

if [[ ! -f "$tool" ]]; then
    echo "conformance-cases.sh: generator not found at $tool" >&2
    echo "  (expected the shared tools next to the repository; set DEED_NODE_TESTS_TOOL)" >&2
    exit 1
fi

py="$("$repo/scripts/venv.sh")"
onnx_version="$("$py" -c 'import onnx; print(onnx.__version__)')"
want="onnx $onnx_version $(sha256sum "$tool" | cut -d' ' -f1)"
stamp="$dir/.deed-cases"

if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    echo "conformance-cases.sh: writing ONNX node tests (onnx $onnx_version) to $dir" >&2
    mkdir -p "$(dirname "$dir")"
    tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    count="$("$py" "$tool" "$tmp")"
    echo "$want" >"$tmp/.deed-cases"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
    echo "conformance-cases.sh: $count cases" >&2
fi

echo "$dir"
