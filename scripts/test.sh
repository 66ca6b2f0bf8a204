#!/usr/bin/env bash
# The project's test command (README, .ci/run): a fresh virtual environment, ruff, then pytest.
#   scripts/test.sh [pytest arguments]
# Tests that need the full corpus read $TANGPOEM_CORPUS; when it is unset the corpus is downloaded
# into work/ first (npm pack, sha256 checked), as `python -m tangpoem.data build` does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TANGPOEM_TEST_VENV:-.venv-test}"
started=$(date +%s)

scripts/setup_env.sh --fresh --venv "$venv" --extras test
echo "install: $(( $(date +%s) - started )) s"

if [ -z "${TANGPOEM_CORPUS:-}" ]; then
  if tarball=$("$venv/bin/python" -m tangpoem.data fetch); then
    export TANGPOEM_CORPUS="$tarball"
  else
    echo "warning: no corpus (see above); the tests that need it will be skipped" >&2
  fi
fi
echo "corpus: ${TANGPOEM_CORPUS:-none}"

"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" -m pytest "$@"
echo "total: $(( $(date +%s) - started )) s"
