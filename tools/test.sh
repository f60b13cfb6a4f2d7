#!/usr/bin/env bash
# Everything a change must pass: set up .venv (once), then
#   1. nbdev_export + nbdev_clean leave the module and notebooks unchanged; README.md is in step with index.ipynb;
#      exported cells are short (tools/cell_sizes.py: a median of at most 10 non-blank lines)
#   2. nbdev_test runs every notebook (cells flagged `slow` only with --slow)
#   2b. the fast cases of the adversarial suite (tools/adversarial.py: odd inputs, corrupt files, concurrency, the CLI)
#   3. one notebook runs end to end in a real Jupyter kernel from nbs/
#   4. the site builds (nbdev's _proc/ rendered by smalldocs into _docs/, pages renamed as Quarto names them, maths as
#      MathML) and passes tools/check_site.py in headless Chromium: links and anchors, widths at 1280 px and on a phone,
#      Exported source folds and signatures, nothing fetched from another host, no machine paths or progress-bar debris,
#      and full-page screenshots in _docs/screenshots/
#   5. the wheel builds and installs into a clean venv
# and ends with one line `N passed, M failed`. Usage: bash tools/test.sh [--slow]
set -uo pipefail
cd "$(dirname "$0")/.."
flags=""
[ "${1:-}" = "--slow" ] && flags="slow"
bash tools/setup_env.sh || { echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"
log=$(mktemp); trap 'rm -f "$log"' EXIT
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 ))s)"; }

# headless Chromium: the server page's test (step 2) and the site check (step 4) drive it
if ! command -v chromium >/dev/null; then
  echo "chromium is missing: installing it from Debian"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) >/dev/null 2>&1 \
    || echo "FAIL: could not install chromium with apt-get" | tee -a "$log"
fi

step "1. the module is what the notebooks export; notebooks are clean; README is in step"
snap() { git status --porcelain -- minivecdb nbs; git diff -- minivecdb nbs | sha256sum; }
before=$(snap)
nbdev_export && nbdev_clean
if [ "$before" = "$(snap)" ]; then echo "PASS: nbdev_export and nbdev_clean changed nothing" | tee -a "$log"
else echo "FAIL: nbdev_export/nbdev_clean changed files (export, clean and commit):" | tee -a "$log"; git status --short -- minivecdb nbs; fi
python tools/cell_sizes.py | tee -a "$log"
python tools/make_readme.py --check | sed 's/^README.md is in/PASS: README.md is in/; s/^README.md is stale/FAIL: README.md is stale/' | tee -a "$log"

step "2. nbdev_test, one notebook at a time, two at once${flags:+ (flags: $flags)}"
# the longest notebooks first, so that two at once finish together rather than one long one running alone at the end
heavy="nbs/05_cli_tests.ipynb nbs/05b_distributed_tests.ipynb nbs/05a_server_tests.ipynb nbs/05b_distributed.ipynb nbs/01_ivf_index_tests.ipynb"
{ for nb in $heavy; do [ -f "$nb" ] && echo "$nb"; done; ls nbs/*.ipynb | grep -vxF -f <(printf '%s\n' $heavy); } | xargs -P 2 -I{} bash -c '
  nb="{}"; s=$(date +%s); out=$(nbdev_test --path "$nb" ${0:+--flags $0} 2>&1); rc=$?
  if [ $rc -eq 0 ]; then echo "PASS: nbdev_test $nb ($(( $(date +%s) - s ))s)"
  else echo "FAIL: nbdev_test $nb ($(( $(date +%s) - s ))s)"; echo "$out" | tail -40; fi' "$flags" | tee -a "$log"

step "2b. adversarial suite: the fast cases of tools/adversarial.py"
adv=$(python tools/adversarial.py 2>&1); rc=$?
echo "$adv"
summary=$(echo "$adv" | tail -n 1)
if [ $rc -eq 0 ]; then echo "PASS: $summary" | tee -a "$log"; else echo "FAIL: $summary" | tee -a "$log"; fi

step "3. a notebook in a real Jupyter kernel"
python tools/run_notebook.py 04_headline_search.ipynb 2>&1 | tail -5 | tee -a "$log"

step "4. the site: build, then check it in headless Chromium"
if python tools/build_site.py; then echo "PASS: site built into _docs/ by smalldocs" | tee -a "$log"
else echo "FAIL: site build" | tee -a "$log"; fi
python tools/check_site.py 2>&1 | tee -a "$log"

step "5. the wheel"
bash tools/check_wheel.sh 2>&1 | tee -a "$log"

passed=$(grep -c '^PASS: ' "$log"); failed=$(grep -c '^FAIL: ' "$log")
echo; echo "took $(( $(date +%s) - t0 ))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
