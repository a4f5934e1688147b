#!/usr/bin/env bash
# The one command that runs every test: `scripts/test.sh`. Installs what the tests need, then
# checks formatting and lints, and runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-deps.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# nextest is on this project's machine image; a machine without it gets it from crates.io
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
cargo nextest run --workspace --locked --no-fail-fast
cargo test --workspace --doc --locked
# a short fuzz run of the decoder (installs cargo-fuzz if missing; stable toolchain)
bash crates/codec/fuzz/smoke.sh "${MIDGE_FUZZ_SECONDS:-30}"
