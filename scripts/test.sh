#!/usr/bin/env bash
# The whole Chorus test suite on a fresh Debian machine: installs what it needs, then runs
# formatting and lint checks, the Rust unit / simulation / end-to-end tests, and the browser tests.
#   scripts/test.sh            everything
#   scripts/test.sh --rust     Rust only (no browsers)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step() { echo "== [$(date +%T)] $*"; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
# --- operations tests (tests/tests/ops): the real promtool and Prometheus server from Debian ---
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need_apt+=(prometheus)
# --- end operations tests ---
# --- speech-quality tests (media-core tests/speech, tests/tests/speech): espeak-ng speaks, sox resamples ---
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
# --- broadcast tests (tests/tests/broadcast): ffmpeg decodes a room's listener stream ---
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# pesq builds a C extension when PyPI has no wheel for this Python: it needs the headers and a compiler.
py_include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -f "$py_include/Python.h" ] || need_apt+=(python3-dev)
command -v cc >/dev/null || need_apt+=(gcc)
# --- end speech-quality tests ---
# --- firefox tests (tests/browser/firefox.test.js): Debian's Firefox ESR driven over Marionette, a private
# PulseAudio null sink for its AudioContext, and a network namespace of the test's own (ip; nft for tcp.test.js, which drops UDP) ---
command -v firefox-esr >/dev/null || need_apt+=(firefox-esr)
command -v pulseaudio >/dev/null || need_apt+=(pulseaudio)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
# --- end firefox tests ---
# --- TURN test (tests/browser/turn.test.js): Debian's coturn, started by the test on 127.0.0.1 and stopped by
# PID. The package's own service does not start here (no systemd in CI; a policy-rc.d, if present, blocks
# it too) ---
command -v turnserver >/dev/null || need_apt+=(coturn)
# --- end TURN test ---
# --- cluster tests (tests/tests/cluster): a real redis-server, started by each test on a free loopback port
# (no persistence) and stopped by PID; the package's own service is not used ---
command -v redis-server >/dev/null || need_apt+=(redis-server)
# --- end cluster tests ---
# --- deploy checks: systemd-analyze verify on the unit ---
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# --- end deploy checks ---
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The installs below fetch from the network while the build further down uses the CPU: they run beside
# it, each logging to a file of its own, and the script waits for them before the first step that needs them.
logs=$(mktemp -d)
background() { # name, command...: run in the background; its pid in pid_<name>
  local name=$1; shift
  ("$@") > "$logs/$name.log" 2>&1 &
  printf -v "pid_$name" %s $!
}
await() { # name: wait for a background install; show its log if it failed
  local name=$1 pid_var="pid_$1"
  if ! wait "${!pid_var}"; then
    echo "background step '$name' failed:" >&2; cat "$logs/$name.log" >&2; exit 1
  fi
}

# A venv at .venv, made once: the PESQ (ITU-T P.862.2 wide-band) scorer for the speech-quality tests,
# schemathesis for the property-based test of docs/openapi.json (tests/tests/ops/api_spec.rs),
# kubernetes-validate (it ships the Kubernetes API schemas) for deploy/kubernetes, and aiortc (below).
venv() {
  set -e
  if ! .venv/bin/python -c 'import pesq, numpy, scipy' 2>/dev/null; then
    step "creating .venv with pesq, numpy, scipy"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check numpy scipy cython
    .venv/bin/pip install --quiet --disable-pip-version-check pesq
  fi
  if ! { [ -x .venv/bin/schemathesis ] && [ -x .venv/bin/kubernetes-validate ]; }; then
    step "installing schemathesis and kubernetes-validate into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5' 'kubernetes-validate>=1.33,<2'
  fi
  # aiortc, a WebRTC client we did not write, for the interop test (tests/tests/interop/mod.rs runs
  # tests/interop/aiortc_client.py): wheels only (aiortc, av, cryptography ship manylinux wheels).
  if ! .venv/bin/python -c 'import aiortc, websockets' 2>/dev/null; then
    step "installing aiortc and websockets into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check --only-binary :all: 'aiortc>=1.16,<2' 'websockets>=14,<18'
  fi
  step ".venv ready"
}
background venv venv
# The browser tests' packages (tests/browser/package-lock.json).
npm_packages() {
  set -e
  cd "$ROOT/tests/browser"
  if ! { [ -d node_modules/playwright-core ] && [ -d node_modules/typescript ] && [ -d node_modules/hls.js ]; }; then
    step "npm ci (tests/browser)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
  step "browser packages ready"
}
if [ "${1:-}" != "--rust" ]; then background npm npm_packages; fi

# A one-shot build gains nothing from incremental compilation, and its caches took gigabytes of disk.
export CARGO_INCREMENTAL=0
# Disk before the build: the workspace's test build needs a few GB (target/ and the cargo registry).
avail_kb=$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt $((6 * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024)) MB free on the disk holding $ROOT; the build needs about 6 GB" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo build of every target, linted by clippy -D warnings as it compiles"
# One compilation does both jobs: clippy-driver stands in for rustc on the workspace's own crates
# (RUSTC_WORKSPACE_WRAPPER, which is what `cargo clippy` itself sets, there for `cargo check`), so its
# lints run while the test build compiles them, and the dependencies are compiled once instead of once
# for `cargo clippy` and again for the build (on a fresh machine the separate clippy pass took 7 of CI's
# 37 minutes). CLIPPY_ARGS is how cargo-clippy hands `-- -D warnings` to the driver. Exported: every cargo
# command below (and those the tests run) must build with the same wrapper, or cargo would recompile.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# The gate must still gate: a crate with a clippy warning has to fail to build under these settings.
canary=$(mktemp -d)
mkdir -p "$canary/src"
printf '[package]\nname = "lint-canary"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' > "$canary/Cargo.toml"
printf 'pub fn len(v: &Vec<u8>) -> usize {\n    v.len()\n}\n' > "$canary/src/lib.rs"
if (cd "$canary" && CARGO_TARGET_DIR="$canary/target" cargo build --quiet 2>/dev/null); then
  echo "clippy-driver let a clippy warning through: the lint gate is broken" >&2; exit 1
fi
rm -rf "$canary"
# Every cargo command below selects the whole workspace: one resolution of the dependencies' features, so
# nothing is compiled twice (a `-p <crate>` build resolves features for that crate alone and recompiles
# whatever differs: minutes on a fresh machine). `cargo test` builds the server's binary too
# (target/debug/chorus); the end-to-end harnesses run it instead of building their own. `--all-targets`
# adds the benches and examples, so they are linted and known to compile; they are not run.
cargo test --locked --workspace --all-targets --no-run --quiet
export CHORUS_BIN="$ROOT/target/debug/chorus"

# Two jobs need the CPU but not the wall clock: media-core's simulation tests (virtual time; about 80 s of
# both cores, mostly Opus encoding) and the fuzz targets' check. They run in the background at the idle
# scheduling class (SCHED_IDLE: a core only when no other task wants it), beside the end-to-end tests,
# which leave the machine about 70 % idle waiting on sockets and timers; a test that wakes preempts them at
# once. Run in the foreground they cost about 3.5 of the suite's 30 minutes. The simulation tests are
# awaited before the real-time calls; the fuzz check, whose rustc processes are idle-class too, may still
# be running beside those and is awaited before the browser tests.
# The fuzz targets (fuzz/, a workspace of its own, run by hand with cargo-fuzz) are built nowhere else: a
# change to the APIs they drive broke four of them unnoticed. Checked here (stable, no sanitizer), not
# linted: clippy's wrapper is for this workspace's crates.
step "in the background, idle-class: the simulation tests (media-core/tests/sim.rs), the fuzz targets' check"
sim_bin=$(cargo test --locked --workspace --test sim --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "sim":
        print(m["executable"])')
[ -x "$sim_bin" ] || { echo "no simulation test binary found" >&2; exit 1; }
sim_tests() { cd "$ROOT/media-core" && exec chrt --idle 0 "$sim_bin"; }
background sim sim_tests
fuzz_check() {
  unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
  exec chrt --idle 0 cargo check --locked --manifest-path fuzz/Cargo.toml --bins --quiet
}
background fuzz_check fuzz_check
# Every other test target of the workspace (new ones join by themselves), by name, for the step below.
other_tests=()
for t in $(cargo metadata --locked --no-deps --format-version 1 | python3 -c 'import json, sys
names = {t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "test" in t["kind"]}
print("\n".join(sorted(names - {"sim"})))'); do
  other_tests+=(--test "$t")
done
await venv
cat "$logs/venv.log"
step "cargo test (all but the simulation tests and the real-time calls)"
cargo test --locked --workspace --lib --bins "${other_tests[@]}" -- --skip real_udp_
cargo test --locked --workspace --doc
step "the simulation tests' results"
await sim
cat "$logs/sim.log"
step "cargo test: speech over real UDP, one call at a time"
# The real-time speech calls (tests/tests/speech) pace their clients by the wall clock: they run after
# everything else, one at a time, so no other test competes with them for the CPU.
cargo test --locked --workspace --test e2e real_udp_ -- --test-threads=1
step "the fuzz targets' check"
await fuzz_check
cat "$logs/fuzz_check.log"

# The deploy files, checked by the real tools. The Dockerfile builds with `cargo build --release --locked`:
# the cargo steps above use --locked too, so a stale Cargo.lock fails here as it would in the image build.
step "deploy: systemd-analyze verify, kubernetes-validate"
unit_dir=$(mktemp -d)
# verify needs ExecStart's binary to exist: check a copy that runs the binary just built.
sed "s|^ExecStart=/usr/local/bin/chorus |ExecStart=$ROOT/target/debug/chorus |" \
  deploy/systemd/chorus.service > "$unit_dir/chorus.service"
grep -q "^ExecStart=$ROOT/target/debug/chorus " "$unit_dir/chorus.service"
# systemd ignores a bad setting with a warning and exits 0: any output is a failure.
verify_out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit_dir/chorus.service" 2>&1) || true
if [ -n "$verify_out" ]; then echo "$verify_out"; exit 1; fi
# deploy/systemd/coturn.service runs Debian's /usr/bin/turnserver (installed above).
verify_out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify deploy/systemd/coturn.service 2>&1) || true
if [ -n "$verify_out" ]; then echo "$verify_out"; exit 1; fi
rm -rf "$unit_dir"
# Strict: unknown fields fail. The PodMonitor (Prometheus operator CRD) has no schema there: a warning.
.venv/bin/kubernetes-validate --strict --quiet --kubernetes-version 1.33.0 deploy/kubernetes/*.yaml

if [ "${1:-}" = "--rust" ]; then exit 0; fi

step "browser tests (headless Chromium)"
await npm
cat "$logs/npm.log"
cd "$ROOT/tests/browser"
CHORUS_BIN="$ROOT/target/debug/chorus" node --test --test-concurrency=1 .
