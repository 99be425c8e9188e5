#!/usr/bin/env bash
# The test command (README): formatting, lints and every test of the workspace. Idempotent; installs the rustfmt
# and clippy components when missing. Tests read the parity fixtures from ../shared/fixtures or $FGCLIP_FIXTURES;
# with FGCLIP_REQUIRE_FIXTURES=1 (CI) a missing fixture fails instead of printing SKIP.
set -euo pipefail
cd "$(dirname "$0")/.."
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
