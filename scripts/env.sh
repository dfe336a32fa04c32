# Sourced by the project's scripts: one cache root outside the repository for
# everything expensive (model assets, the llama.cpp build, cargo's target dir),
# keyed by version so a change of toolchain or assets never mixes with old files.
: "${RAGMAP_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/ragmap}"
export RAGMAP_CACHE
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  rustc_version=$(rustc --version 2>/dev/null | awk '{print $2}')
  export CARGO_TARGET_DIR="$RAGMAP_CACHE/target/rust-${rustc_version:-unknown}"
fi
