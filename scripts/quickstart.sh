#!/usr/bin/env bash
# From a fresh clone to poems: first from the model shipped in the package (about a minute), then
# from a model you train yourself (corpus, 15 minutes of training), the two side by side at the end.
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
starts=(--start-words 床前明月光, --form 五绝 --seed 1)
heads=(--acrostic --start-words 春花秋月 --form 七绝 --seed 1)

step "1/5 environment (.venv)"
scripts/setup_env.sh --venv .venv
py=.venv/bin/python
if "$py" -c 'import sys, tangpoem.device as d; sys.exit(not d.gpu_available())' 2>/dev/null; then
  config=gpu
else
  config=cpu
fi

step "2/5 poems from the bundled model ($(( $(date +%s) - started )) s after the start)"
"$py" -m tangpoem.generate --model-path bundled "${starts[@]}"
echo
"$py" -m tangpoem.generate --model-path bundled "${heads[@]}"

step "3/5 corpus (work/tang_poem.npz)"
if [ -f work/tang_poem.npz ]; then
  echo "work/tang_poem.npz is there: skipping (delete it to rebuild)"
else
  "$py" -m tangpoem.data build "${source_args[@]}" --out work/tang_poem.npz
fi

step "4/5 training your own with configs/$config.toml (stops by itself; Ctrl-C saves, re-run resumes)"
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

step "5/5 the same requests: the bundled model, then yours ($model)"
for m in bundled "$model"; do
  echo "-- $m"
  "$py" -m tangpoem.generate --model-path "$m" "${starts[@]}"
  echo
  "$py" -m tangpoem.generate --model-path "$m" "${heads[@]}"
  echo
done
printf 'quickstart done in %s s. More: README.md (generation options, the web page, evaluation, training).\n' \
  "$(( $(date +%s) - started ))"
