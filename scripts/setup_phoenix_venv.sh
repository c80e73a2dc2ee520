#!/usr/bin/env bash
# Build a separate virtual environment holding Arize Phoenix, the OTLP-receiving backend the
# tracing integration test sends spans to (tests/tracing/test_otlp_integration.py). It is not
# a test dependency of the project: it is ~850 MB, and the pytest plugin it installs breaks a
# suite that turns warnings into errors.
#
#   scripts/setup_phoenix_venv.sh [VENV_DIR]      # default: ~/.cache/corl-graph/phoenix-venv
#   export CORL_PHOENIX_BIN=VENV_DIR/bin/phoenix
set -euo pipefail

VENV="${1:-${HOME}/.cache/corl-graph/phoenix-venv}"
PYTHON="${PYTHON:-python3.11}"
PHOENIX_VERSION="${PHOENIX_VERSION:-20.26.1}"

if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --upgrade pip
"${VENV}/bin/python" -m pip install "arize-phoenix==${PHOENIX_VERSION}"
"${VENV}/bin/phoenix" --help > /dev/null
echo "export CORL_PHOENIX_BIN=${VENV}/bin/phoenix"
