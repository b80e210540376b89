#!/usr/bin/env bash
# Screenshots of TensorBoard as a user opens it (`make tensorboard RUN=<run>`): the scalars page
# and the Profile tab, taken by headless Chromium (apt-get install chromium). Writes
# docs/img/tensorboard-<page>.png. Usage: tools/screenshots.sh RUN [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: tools/screenshots.sh RUN [OUT_DIR]}"
out="${2:-docs/img}"
logdir="runs/$run"
[ -d "$logdir" ] || { echo "no $logdir: run make train RUN=$run (and make profile RUN=$run) first" >&2; exit 2; }
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
port=$(.venv/bin/python -c "from stoker.ports import free_ports; print(free_ports(1)[0])")
.venv/bin/tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port" --reload_interval 1 >/dev/null 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null || true' EXIT
for _ in $(seq 60); do  # TensorBoard answers, and has scanned the run
  curl -sf --compressed "http://127.0.0.1:$port/data/plugin/profile/runs" | grep -q profile && break
  sleep 1
done
mkdir -p "$out"
for page in scalars profile; do
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
    --virtual-time-budget=20000 --screenshot="$out/tensorboard-$page.png" "http://127.0.0.1:$port/#$page" \
    >/dev/null 2>&1
  echo "wrote $out/tensorboard-$page.png"
done
