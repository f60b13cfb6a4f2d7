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
# jupyterlab's jupyter-events installs rfc3987-syntax (with jsonschema[format-nongpl]), and jsonschema imports it whenever
# it is there: it builds a grammar at import, about 1.8 s of CPU in every process that imports ray (the driver, each Ray
# worker and agent). Measured here: Ray started in 13-19 s with it and 7.6-8.9 s without; with 8 CPU burners beside it,
# Ray's start failed twice out of two with it (its dashboard agent missed the raylet's 15 s limit) and took 27-30 s
# without. jsonschema works without it (it skips the IRI formats). A user's `pip install "minivecdb[ray]"` never installs it.
"$venv/bin/python" -m pip uninstall -y rfc3987-syntax >>"$log" 2>&1
echo "$want" > "$stamp"
echo "environment ready: $venv"
