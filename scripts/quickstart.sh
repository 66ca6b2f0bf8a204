#!/usr/bin/env bash
# From a fresh clone to two poems: environment, corpus, a short training run, then generation.
#   scripts/quickstart.sh [--source PATH]   (PATH: a chinese-poetry clone, its npm package or tarball)
# Re-running skips what is done and resumes training where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_args=(--source "$2"); shift 2 ;;
    *) echo "quickstart.sh: unknown option $1 (only --source PATH)" >&2; exit 2 ;;
  esac
done
step() { printf '\n== %s ==\n' "$*"; }
started=$(date +%s)

step "1/4 environment (.venv)"
scripts/setup_env.sh --venv .venv
py=.venv/bin/python
if "$py" -c 'import sys, tangpoem.device as d; sys.exit(not d.gpu_available())' 2>/dev/null; then
  config=gpu
else
  config=cpu
fi

step "2/4 corpus (work/tang_poem.npz)"
if [ -f work/tang_poem.npz ]; then
  echo "work/tang_poem.npz is there: skipping (delete it to rebuild)"
else
  "$py" -m tangpoem.data build "${source_args[@]}" --out work/tang_poem.npz
fi

step "3/4 training with configs/$config.toml (stops by itself; Ctrl-C saves, re-run resumes)"
latest() {
  "$py" -c "from tangpoem.checkpoint import latest_checkpoint as l; from tangpoem.config import make_config as m
print(l(m(config_file='$config').model_prefix) or '')"
}
if [ -n "$(latest)" ]; then
  echo "resuming from $(latest)"
  "$py" -m tangpoem.train -c "$config" --resume latest
else
  "$py" -m tangpoem.train -c "$config"
fi
model=$(latest)
[ -n "$model" ] || { echo "quickstart.sh: training left no checkpoint" >&2; exit 1; }

step "4/4 poems from $model"
"$py" -m tangpoem.generate -c "$config" --model-path "$model" --start-words 老夫聊发少年狂,
echo
"$py" -m tangpoem.generate -c "$config" --model-path "$model" --acrostic --start-words 夜月一帘幽梦春风十里柔情
printf '\nquickstart done in %s s. More: README.md (generation options, evaluation, longer training).\n' \
  "$(( $(date +%s) - started ))"
