#!/usr/bin/env bash
# Creates .venv with minivecdb (editable) and its development tools. Idempotent: a stamp of the install files
# makes a second run return at once; change settings.ini, setup.py or this script and it installs again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp=$venv/.minivecdb-install-stamp
want=$(cat settings.ini setup.py pyproject.toml tools/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/nbdev_test" ]; then
  exit 0
fi
echo "setting up $venv (first run takes a few minutes)..."
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
log=$venv/pip-install.log
pipi() { "$venv/bin/python" -m pip install "$@" >>"$log" 2>&1 || { tail -30 "$log"; echo "pip install $* failed (log: $log)"; exit 1; }; }
pipi --upgrade pip setuptools wheel
# torch first, pinned: a CPU build of 2.13.0; an unpinned torch pulled in by fastkmeans or
# sentence-transformers would be a multi-GB CUDA build.
pipi torch==2.13.0
pipi -e ".[dev]"
echo "$want" > "$stamp"
echo "environment ready: $venv"
