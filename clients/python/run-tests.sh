#!/usr/bin/env bash
# The Python SDK's checks, as CI runs them: install the package (not editable)
# with its test dependencies into a fresh venv, then ruff, mypy --strict and
# pytest (cases.json against a real `mandate serve`, and the fault stubs).
#
#   clients/python/run-tests.sh [VENV_DIR]
#
# VENV_DIR defaults to a temporary directory. The mandate binary is
# target/debug/mandate at the repository root, or $MANDATE_BIN. $PYTHON picks
# the interpreter (python3). Exits non-zero if any step fails; every step runs.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
tmp=""
if [[ $# -ge 1 && -n "$1" ]]; then
    venv=$1
else
    tmp=$(mktemp -d)
    venv=$tmp/venv
    trap 'rm -rf "$tmp"' EXIT
fi

step() { printf '\n== python client: %s\n' "$*"; }

step "venv at $venv ($("$python" --version 2>&1))"
"$python" -m venv "$venv" || exit 1
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null || true
step "pip install '$here[dev,fastapi]' (not editable)"
"${pip[@]}" install "$here[dev,fastapi]" || exit 1

cd "$here" || exit 1
failed=()

step "ruff check"
"$venv/bin/ruff" check . || failed+=("ruff check")
step "ruff format --check"
"$venv/bin/ruff" format --check . || failed+=("ruff format")
step "mypy --strict src"
"$venv/bin/mypy" --strict src || failed+=("mypy")
step "pytest (the installed package; a real mandate serve and the fault stubs)"
# -p no:cacheprovider: leave nothing in the work tree.
"$venv/bin/python" -m pytest -p no:cacheprovider tests || failed+=("pytest")

if [[ ${#failed[@]} -gt 0 ]]; then
    printf '\n== python client: FAILED: %s\n' "${failed[*]}"
    exit 1
fi
printf '\n== python client: ruff, mypy and pytest passed\n'
