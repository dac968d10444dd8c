#!/usr/bin/env bash
# Runs schemathesis (`--checks all`) against the real binary and the fake Hub: every answer
# must match the committed OpenAPI document, and every request it allows must be accepted.
# Needs: the debug `millm` and `examples/fake_hub` in $CARGO_TARGET_DIR, and $ST (the
# schemathesis executable). Seeds the registry with a downloaded and a local model, so the
# `{id}` operations reach real models too. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SEED=${ST_SEED:-1}
EXAMPLES=${ST_MAX_EXAMPLES:-50}
WORK=$(mktemp -d /tmp/millm-st.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$TARGET_DIR/debug/examples/fake_hub" > "$WORK/hub.out" &
pids+=($!)
for _ in $(seq 100); do grep -q LISTENING "$WORK/hub.out" && break; sleep 0.1; done
HUB=$(awk '/LISTENING/{print $2}' "$WORK/hub.out")
[ -n "$HUB" ] || { echo "the fake Hub did not start"; exit 1; }

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
HF_ENDPOINT=$HUB MILLM_DATA_DIR="$WORK/data" PORT=$PORT LOG_LEVEL=warn \
  "$TARGET_DIR/debug/millm" serve > "$WORK/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do curl -sf "$BASE/api/health/live" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/api/health/live" >/dev/null || { cat "$WORK/server.log"; exit 1; }

# One Hub model and one local folder in the registry before the run.
json() { curl -sf -H 'Content-Type: application/json' -d "$2" "$BASE$1" >/dev/null; }
json /api/models '{"source": "huggingface", "repo_id": "test-org/tiny-llama"}'
"$TARGET_DIR/debug/examples/write_test_model" "$WORK/local-model" >/dev/null
json /api/models "{\"source\": \"local\", \"local_path\": \"$WORK/local-model\", \"quantization\": \"Q8\"}"

echo "schemathesis --checks all, seed $SEED, at most $EXAMPLES examples per operation"
"$ST" --config-file scripts/schemathesis.toml run "$BASE/openapi.json" \
  --checks all --seed "$SEED" --max-examples "$EXAMPLES" --no-color
