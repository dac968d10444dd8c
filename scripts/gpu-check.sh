#!/usr/bin/env bash
# The prepared GPU check of issue 4, for a machine with an NVIDIA GPU, its driver and a Python
# with torch + transformers (the lent H100 has /opt/torch/.venv). Built here, run there:
#
#   bash ../shared/gpu/setup-nvcc.sh && source ~/.cache/millm-cuda/cuda-env.sh
#   cargo build --release --features cuda --bin millm && cargo build --release --example write_test_model
#   mkdir -p .gpu/bin && cp ../shared/gpu/with-cuda-libs.sh .gpu/ && cp scripts/gpu-check.sh .gpu/
#   cp target/release/millm target/release/examples/write_test_model .gpu/bin/ && strip .gpu/bin/*
#   device run (carry .gpu): bash .gpu/with-cuda-libs.sh bash .gpu/gpu-check.sh .gpu/bin "$OUT"
#
# It writes a ≥ 3 GiB bf16 Llama checkpoint, loads it with millm at FP16 and at Q4 (from a cold
# page cache when it may drop caches), and prints load GB/s, tokens/s of a 64-token generation on
# the device, NVML memory before the load, after it, after the generation and after the unload,
# and the estimate; then times transformers' from_pretrained(...,
# device_map="cuda") on the same files. GPU_CHECK_ALLOW_CPU=1 dry-runs it on a CPU build.
set -euo pipefail
BIN=${1:-.gpu/bin}
OUT_DIR=${2:-${OUT:-/tmp/gpu-check}}
GIB=${GPU_CHECK_GIB:-3}
PY=${PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu-check.log") 2>&1

if ! command -v nvidia-smi >/dev/null 2>&1 && [ -z "${GPU_CHECK_ALLOW_CPU:-}" ]; then
  echo "gpu-check: no GPU here (nvidia-smi not found); set GPU_CHECK_ALLOW_CPU=1 for a dry run" >&2
  exit 1
fi
mem_mb() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n1 || echo 0; }
since() { "$PY" -c 'import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 3))' "$(date +%s.%N)" "$1"; }
field() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(d['data']$1 if d['success'] else 'ERR '+d['error']['code']+': '+d['error']['message'])"; }

WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
SRV=""
cleanup() { [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== writing a ${GIB} GiB bf16 checkpoint"
t0=$(date +%s.%N)
"$BIN/write_test_model" "$WORK/fp16" bf16 2 --gib "$GIB"
echo "written in $(since "$t0") s"
mkdir "$WORK/q4" && ln "$WORK"/fp16/* "$WORK/q4/"   # a second folder, the same bytes
BYTES=$(cat "$WORK"/fp16/*.safetensors | wc -c)

PORT=${GPU_CHECK_PORT:-18123}
MILLM_DATA_DIR="$WORK/data" HOST=127.0.0.1 PORT=$PORT "$BIN/millm" serve > "$OUT_DIR/millm.log" 2>&1 &
SRV=$!
API="http://127.0.0.1:$PORT"
for _ in $(seq 150); do curl -sf "$API/api/health" >/dev/null && break; sleep 0.2; done
echo "== health: $(curl -s "$API/api/health")"

for q in FP16 Q4; do
  dir="$WORK/$(echo "$q" | tr 'A-Z' 'a-z')"
  id=$(curl -s "$API/api/models" -d "{\"source\":\"local\",\"local_path\":\"$dir\",\"quantization\":\"$q\"}" | field "['id']")
  sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cache=cold; else cache=warm; fi
  before=$(mem_mb)
  t0=$(date +%s.%N)
  curl -s -X POST "$API/api/models/$id/load" > /dev/null
  while :; do
    st=$(curl -s "$API/api/models/$id" | field "['status']")
    [ "$st" = loaded ] && break
    if [ "$st" != loading ]; then echo "load at $q failed: $(curl -s "$API/api/models/$id")"; exit 1; fi
    sleep 0.05
  done
  secs=$(since "$t0")
  after=$(mem_mb)
  model=$(curl -s "$API/api/models/$id")
  # Generation on the device: 64 tokens after a short prompt (the random weights of the test
  # checkpoint cost what real ones do); the server's own figure of the last minute's tokens/s.
  gen=$(curl -s "$API/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$id\",\"prompt\":\"Once upon a time\",\"max_tokens\":64,\"temperature\":1,\"seed\":1}")
  tps=$(curl -s "$API/api/health" | field "['tokens_per_second']")
  echo "millm $q on the device: $(echo "$gen" | "$PY" -c "import json,sys; d=json.load(sys.stdin); print(d.get('usage') or d)") at $tps tokens/s"
  after_gen=$(mem_mb)
  echo "NVML used after that generation: $after_gen MiB"
  curl -s -X POST "$API/api/models/$id/unload" > /dev/null
  unloaded=$(mem_mb)
  echo "$model" | "$PY" -c "
import json,sys
m=json.load(sys.stdin)['data']
b=$BYTES; s=$secs
print(f\"millm {'$q':>4} ($cache cache): {b/s/1e9:.2f} GB/s ({s:.2f} s); device {m['device']} dtype {m['dtype']}; \"
      f\"footprint {m['memory_footprint']/2**20:.0f} MiB, estimate {m['estimated_memory_mb']} MiB (weights + overhead); \"
      f\"NVML used: before {$before} MiB, after load {$after} MiB, after unload {$unloaded} MiB\")"
done
kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=""

echo "== transformers from_pretrained(device_map='cuda') on the same files"
for cache in cold warm; do
  [ $cache = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop the page cache)"; }
  "$PY" - "$WORK/fp16" "$BYTES" "$cache" <<'PY' || echo "transformers baseline not run"
import sys, time
import torch, transformers
path, size, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = time.time()
m = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16, device_map="cuda")
torch.cuda.synchronize()
s = time.time() - t
print(f"transformers ({cache}): {size/s/1e9:.2f} GB/s ({s:.2f} s), torch allocated {torch.cuda.memory_allocated()/2**20:.0f} MiB")
PY
done
