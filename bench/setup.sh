# Sourced by the bench scripts, from the repository's root: builds the release binary and
# leaves PAL (the binary), OUT (results directory) and WS (a fresh workspace, now the
# current directory; the repository is $OLDPWD).
cargo build --release -q -p palisade-cli
PAL="${CARGO_TARGET_DIR:-$PWD/target}/release/palisade"
OUT=${OUT:-$(mktemp -d)}
WS=$(mktemp -d)/ws
mkdir -p "$WS"
cd "$WS"
