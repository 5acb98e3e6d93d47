#!/usr/bin/env bash
# XLA test stage: torch-xla SPMD FSDP pretraining on 4 virtual CPU devices (PJRT_DEVICE=CPU).
#
#   bash tests/run_xla_stage.sh [extra pytest arguments]
#
# torch-xla needs its own torch (torch==2.9.0 with torch_xla==2.9.0), so the stage runs in a separate
# virtual environment, cached under ~/.cache/genolm-ci/xla-<hash>/ where <hash> covers the pins below and
# genolm's dependency list in setup.cfg. The first run builds it (a few minutes: torch, torch-xla and
# genolm's dependencies from PyPI); later runs reuse it and only re-point the editable genolm install at
# this checkout. GENOLM_CPU_PYTHON (default: the python3 on PATH) is the main environment's interpreter,
# used to check that the XLA-trained export reloads there with the same logits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="torch==2.9.0 torch_xla==2.9.0"
BASE_PYTHON="${GENOLM_XLA_BASE_PYTHON:-python3}"
CACHE_ROOT="${GENOLM_CI_CACHE:-$HOME/.cache/genolm-ci}"

deps="$(sed -n '/^install_requires/,/^\[/p; /^\[options.extras_require\]/,/^\[/p' "$REPO/setup.cfg")"
key="$(printf '%s\n%s\n%s\n' "$PINS" "$deps" "$("$BASE_PYTHON" -c 'import sys; print(sys.version_info[:2])')" \
    | sha256sum | cut -c1-16)"
VENV="$CACHE_ROOT/xla-$key"
mkdir -p "$CACHE_ROOT"

# One builder at a time; a finished build is marked by .complete.
exec 9>"$CACHE_ROOT/xla-$key.lock"
flock 9
if [[ ! -f "$VENV/.complete" ]]; then
    echo "[xla stage] building $VENV ($PINS)"
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch_xla does not declare its torch requirement: install the pair together, then genolm's
    # dependencies resolved against that torch.
    "$VENV/bin/python" -m pip install --quiet $PINS 2>"$VENV/install.log" || { cat "$VENV/install.log"; exit 1; }
    "$VENV/bin/python" -m pip install --quiet -e "$REPO[xla,test]" 2>>"$VENV/install.log" \
        || { cat "$VENV/install.log"; exit 1; }
    touch "$VENV/.complete"
else
    echo "[xla stage] reusing $VENV"
fi
# Point the editable install at this checkout (fast; the dependencies are already there).
"$VENV/bin/python" -m pip install --quiet --no-deps -e "$REPO" >/dev/null 2>&1 \
    || "$VENV/bin/python" -m pip install --no-deps -e "$REPO"
flock -u 9

# The main (CPU) environment's interpreter: the python3 on PATH when it has genolm's dependencies,
# else this environment's own (with torch-xla switched off).
if [[ -z "${GENOLM_CPU_PYTHON:-}" ]]; then
    GENOLM_CPU_PYTHON="$VENV/bin/python"
    if command -v python3 >/dev/null && python3 -c "import torch, transformers" 2>/dev/null; then
        GENOLM_CPU_PYTHON="$(command -v python3)"
    fi
fi
export GENOLM_CPU_PYTHON
cd "$REPO"
exec "$VENV/bin/python" -m pytest -m xla tests/test_parallel_xla.py -p no:cacheprovider "$@"
