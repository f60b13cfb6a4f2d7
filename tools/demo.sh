#!/usr/bin/env bash
# The main job: set up the environment (once) and run the headline semantic-search demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/minivecdb demo "$@"
