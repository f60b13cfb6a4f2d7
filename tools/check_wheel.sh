#!/usr/bin/env bash
# Build the wheel and install it into a clean venv (no editable checkout on the path): the module imports,
# its package data is inside, the console script exists, and importing it loads no model.
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: wheel: $*"; exit 1; }
.venv/bin/python -m pip wheel -q . --no-deps -w "$work/dist" >"$work/log" 2>&1 || { tail -5 "$work/log"; fail "pip wheel failed"; }
whl=$(ls "$work"/dist/minivecdb-*.whl) || fail "no wheel written"
python3 -m venv "$work/venv" || fail "cannot make a venv"
"$work/venv/bin/python" -m pip install -q torch==2.13.0 "$whl" >"$work/log" 2>&1 || { tail -5 "$work/log"; fail "install into a clean venv failed"; }
cd "$work" && "$work/venv/bin/python" - "$whl" <<'PY' || exit 1
import sys, time, importlib.resources, subprocess, zipfile
t0 = time.perf_counter(); import minivecdb.ivf_index; t = time.perf_counter() - t0
import minivecdb
loaded = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]
data = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if '/data/' in n]
problems = []
if 'site-packages' not in minivecdb.__file__: problems.append(f'imported from {minivecdb.__file__}')
if loaded: problems.append(f'import loaded {loaded}')
import minivecdb.cli, minivecdb.distributed
if 'ray' in sys.modules: problems.append('importing minivecdb imported ray (an optional extra)')
try: minivecdb.distributed._ray(); problems.append('ray is importable in a venv without the [ray] extra')
except ImportError as e:
    if 'pip install "minivecdb[ray]"' not in str(e): problems.append(f'without ray, a sharded index says {e!r}')
import importlib.metadata as md
if not any(r.startswith('ray') and 'extra == "ray"' in r for r in md.requires('minivecdb') or []): problems.append('no [ray] extra in the wheel')
if not data: problems.append('no package data (minivecdb/data/*) in the wheel')
for n in data:
    if not importlib.resources.files('minivecdb').joinpath(n.split('minivecdb/', 1)[1]).is_file(): problems.append(f'{n} not installed')
bin_ = sys.executable.rsplit('/', 1)[0]
if subprocess.run([f'{bin_}/minivecdb', '--help'], capture_output=True).returncode: problems.append('minivecdb --help failed')
print(('FAIL' if problems else 'PASS') + f': wheel {sys.argv[1].rsplit("/",1)[1]} installs into a clean venv; '
      f'package data {data}; import minivecdb.ivf_index took {t*1000:.0f} ms and loaded no model; Ray is an extra, never imported'
      + (f'; problems: {problems}' if problems else ''))
sys.exit(1 if problems else 0)
PY
