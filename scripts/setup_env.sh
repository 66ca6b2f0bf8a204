#!/usr/bin/env bash
# Create (or reuse) a virtual environment with tangpoem and the right Paddle wheel:
# paddlepaddle-gpu when `nvidia-smi` works, else paddlepaddle (CPU); the newest one unless --paddle pins it.
#   scripts/setup_env.sh [--venv DIR] [--extras test,bench] [--fresh] [--cpu|--gpu] [--paddle VERSION]
# (--paddle 2.6.2: the oldest Paddle tangpoem supports, and the newest paddlepaddle-gpu on PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv extras="" fresh=0 wheel="" paddle=""
while [ $# -gt 0 ]; do
  case "$1" in --venv|--extras|--paddle) [ $# -ge 2 ] || { echo "setup_env.sh: $1 needs a value" >&2; exit 2; } ;; esac
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --cpu) wheel=cpu; shift ;;
    --gpu) wheel=gpu; shift ;;
    --paddle) paddle="$2"; shift 2 ;;
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
pin=""  # the extra's requirement (paddlepaddle>=2.6) and this pin together pick the version
if [ -n "$paddle" ]; then
  if [ "$wheel" = gpu ]; then pin="paddlepaddle-gpu==$paddle"; else pin="paddlepaddle==$paddle"; fi
fi
stamp="$venv/.tangpoem-installed" want="${spec}${pin:+ $pin}"
if [ "$fresh" = 1 ] || [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (Paddle wheel: $wheel${paddle:+ $paddle})"
  "$python" -m venv --clear "$venv"
elif [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import paddle, tangpoem' 2>/dev/null; then
  echo "$venv is ready ($want)"
  exit 0
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$spec" ${pin:+"$pin"}
echo "$want" > "$stamp"
echo "$venv is ready ($spec): $("$venv/bin/python" -c 'import paddle; print("paddle", paddle.__version__)' 2>/dev/null)"
