#!/usr/bin/env bash
# The checks CI runs, in order, after scripts/setup.sh: lint (ruff, line length 120; the rules are pyproject.toml's
# [tool.ruff.lint]), format, the import-layer contracts of docs/architecture.md (import-linter), the types of src/
# (mypy, [tool.mypy]), then the whole test suite. Any failure stops with its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy src/mmdistill
.venv/bin/python -m pytest -q "$@"
