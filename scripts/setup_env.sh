#!/usr/bin/env bash
# Create (or reuse) a virtual environment with tangpoem and the right Paddle wheel:
# paddlepaddle-gpu when `nvidia-smi` works, else paddlepaddle (CPU).
#   scripts/setup_env.sh [--venv DIR] [--extras test,bench] [--fresh] [--cpu|--gpu]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv extras="" fresh=0 wheel=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --cpu) wheel=cpu; shift ;;
    --gpu) wheel=gpu; shift ;;
    *) echo "setup_env.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$wheel" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then wheel=gpu; else wheel=cpu; fi
fi
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "setup_env.sh: tangpoem needs Python 3.10 or newer ($python is $("$python" --version 2>&1))" >&2; exit 2; }

spec=".[${wheel}${extras:+,$extras}]"
stamp="$venv/.tangpoem-installed"
if [ "$fresh" = 1 ] || [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (Paddle wheel: $wheel)"
  "$python" -m venv --clear "$venv"
elif [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ] && "$venv/bin/python" -c 'import paddle, tangpoem' 2>/dev/null; then
  echo "$venv is ready ($spec)"
  exit 0
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$spec"
echo "$spec" > "$stamp"
echo "$venv is ready ($spec): $("$venv/bin/python" -c 'import paddle; print("paddle", paddle.__version__)' 2>/dev/null)"
