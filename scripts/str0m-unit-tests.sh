#!/usr/bin/env bash
# Runs the vendored str0m's own unit tests (vendor/str0m/PATCHES.md, "Testing").
#
# The vendored manifest drops str0m's dev-dependencies and the optional crypto back ends whose
# versions the registry here does not have, so `cargo test -p str0m` cannot build its tests in the
# workspace. This copies vendor/str0m to a scratch directory, gives the copy the two dev-dependencies
# its unit tests use (serde_json, tracing-subscriber), drops the optional back ends, and runs
# `cargo test --lib` there with the workspace's lock file. Two tests read `docs/chrome-sdp.json`,
# a file of str0m's repository that is not vendored: the copy gets an empty stand-in so that the tests
# build, and those two are skipped.
#
# Not part of CI (a separate build of str0m, ≈ 2 min); run it after changing vendor/str0m.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${STR0M_TEST_DIR:-/tmp/chorus-str0m-tests}"
rm -rf "$work/crate"
mkdir -p "$work"
cp -r "$root/vendor/str0m" "$work/crate"
cp "$root/Cargo.lock" "$work/crate/"
cd "$work/crate"
sed -i 's/use systemstat::Duration;/use std::time::Duration;/' src/bwe/loss_controller.rs
mkdir -p docs && echo '{}' > docs/chrome-sdp.json
python3 - <<'PY'
import re
s = open("Cargo.toml").read()
for dep in ["drv", "str0m-openssl", "str0m-rust-crypto", "str0m-apple-crypto", "str0m-wincrypto"]:
    s = re.sub(r"\[(?:target\.[^\]]*\.)?dependencies\." + re.escape(dep) + r"\]\n(?:[^\[\n].*\n|\n)*", "", s)
# The features stay, empty, because the source still names them in `cfg`s.
s = re.sub(r"^(drv|openssl|rust-crypto|vendored|apple-crypto|wincrypto|wincrypto-dimpl) = .*\n", r"\1 = []\n", s, flags=re.M)
s = re.sub(r"^openssl-dimpl = \[\n[^\]]*\]\n", "openssl-dimpl = []\n", s, flags=re.M)
s += '\n[dev-dependencies]\nserde_json = "1"\ntracing-subscriber = { version = "0.3", features = ["fmt"] }\n\n[workspace]\n'
open("Cargo.toml", "w").write(s)
PY
CARGO_TARGET_DIR="$work/target" cargo test --offline -q --lib -- \
  --skip sdp::data::test::fast_and_easy_parse_agree \
  --skip sdp::data::test::invalid_sdp_keeps_the_detailed_error
