#!/usr/bin/env bash
# Builds target/debian/hotsup_*.deb: the binary, man page, shell completions
# and systemd units. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin hotsup
mkdir -p target/assets
./target/release/hotsup generate man target/assets
gzip -9nf target/assets/*.1
./target/release/hotsup generate completions bash > target/assets/hotsup.bash
./target/release/hotsup generate completions zsh > target/assets/_hotsup
./target/release/hotsup generate completions fish > target/assets/hotsup.fish
cargo deb --no-build "$@"
