#!/usr/bin/env bash
# genolm's test command: build (or reuse) the cached test environment, then run
#   1. ruff, 2. the CPU suite, 3. the XLA stage (torch-xla on 4 virtual CPU devices), 4. the slow tests.
# Environments live outside the clone, in $GENOLM_CI_CACHE (default ~/.cache/genolm-ci), keyed by a hash of the
# dependency pins, so a rerun reuses them and a fresh machine builds them.
# Skip stages with GENOLM_SKIP_XLA=1 or GENOLM_SKIP_SLOW=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${GENOLM_CI_CACHE:-$HOME/.cache/genolm-ci}
export GENOLM_CI_CACHE=$CACHE
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0"   # the version the README's main command installs (pip picks the wheel)

key=$({ cat setup.cfg; echo "$TORCH_PIN [test,wandb]"; "$PYTHON" --version; } | sha256sum | cut -c1-16)
VENV="$CACHE/cpu-$key"
if [ ! -f "$VENV/.complete" ]; then
    echo "== building the test environment in $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "$TORCH_PIN" -e ".[test,wandb]"
    touch "$VENV/.complete"
fi
# The cached environment holds the dependencies; genolm itself is (re)installed from this clone.
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e . >/dev/null
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== ruff"
ruff check .

echo "== CPU suite"
python -m pytest -m "not slow and not xla" -q --durations=15 -p no:cacheprovider

if [ "${GENOLM_SKIP_XLA:-0}" != 1 ]; then
    echo "== XLA stage"
    bash "$ROOT/tests/run_xla_stage.sh"
fi

if [ "${GENOLM_SKIP_SLOW:-0}" != 1 ]; then
    echo "== slow tests"
    status=0
    python -m pytest -m "slow and not xla" -q --durations=10 -p no:cacheprovider || status=$?
    [ "$status" = 0 ] || [ "$status" = 5 ] || exit "$status"   # 5: no slow test selected
fi
