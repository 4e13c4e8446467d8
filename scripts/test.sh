#!/usr/bin/env bash
# Runs every test of arsync, installing what the tests need first (Debian 12, as root).
# Steps: system packages -> cargo fmt --check -> clippy -D warnings -> docs (warnings are errors)
# -> the whole test suite (unit, stress, black-box against the built binary and rsync).
# Prints how many tests ran, passed, failed and were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for tool in rsync:rsync setfacl:acl getfattr:attr mkfs.xfs:xfsprogs /usr/bin/time:time filefrag:e2fsprogs mkfs.ext4:e2fsprogs setpriv:util-linux mpirun:openmpi-bin mpicc:libopenmpi-dev pkg-config:pkg-config strace:strace; do
  cmd=${tool%%:*}; pkg=${tool##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
# The `mpi` feature's bindings are generated with libclang at build time.
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || ls /usr/lib/llvm-*/lib/libclang-*.so >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "== not root: cannot install ${need_pkgs[*]}; tests that need them will say SKIP"
  fi
fi

# The multi-node mode needs Open MPI and libclang to build; without them (not root, nothing
# installed) the suite runs without it and tests/mpi.rs says SKIP.
features=arsync/test-hooks
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 \
  && ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1; then
  features=$features,arsync/mpi
else
  echo "== Open MPI or libclang missing: building without --features mpi"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors; default build, and with the test-only hooks)"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --workspace --all-targets --release --features "$features" -- -D warnings

echo "== cargo doc (warnings are errors; public items, then every item, so that private links resolve too)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --features "$features"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --features "$features" --document-private-items

echo "== cargo test"
log=$(mktemp)
export ARSYNC_TEST_SKIPLOG=$(mktemp)
set +e
# The binary under test carries the test-only fault-injection hooks (inert unless
# ARSYNC_TEST_HOOK is set; see engine/src/hooks.rs): the race tests need them. It also has the
# multi-node mode (--features mpi), which tests/mpi.rs runs under mpirun with 2 and 3 ranks.
cargo test --workspace --release --no-fail-fast --features "$features" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored' "$log" | awk '{s+=$1} END {print s+0}')
skipped=$(wc -l < "$ARSYNC_TEST_SKIPLOG")
if [ "$skipped" -gt 0 ]; then echo "skipped parts:"; cat "$ARSYNC_TEST_SKIPLOG"; fi
rm -f "$log" "$ARSYNC_TEST_SKIPLOG"
echo
echo "tests: $passed passed, $failed failed, $ignored ignored; $skipped skipped at run time (see SKIP lines)"
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
