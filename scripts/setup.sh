#!/usr/bin/env bash
# Create .venv and install mmdistill with its test extras.
# torch==2.13.0 goes first: here it resolves to a local CPU wheel; an unpinned torch would
# pull gigabytes of CUDA packages. The package's own metadata keeps a normal range (torch>=2.2),
# which the pinned install already satisfies, so pip adds nothing torch-related afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
