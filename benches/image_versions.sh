#!/bin/bash
# Store bytes of disk images kept in versions (issue 19): each image in
# turn is copied (sparse) to the same path and backed up, and the store's
# bytes printed after each, for every cairn given and for restic 0.14
# when installed (a fresh repository each run: its chunker polynomial is
# random, so its size moves a little from run to run).
#   bash benches/image_versions.sh V1.img V2.img ...
#   CAIRNS="old/cairn new/cairn"  the cairn binaries (default: the release build)
# ARCHITECTURE.md ("A disk image as users keep one, in versions") says how
# the images were made.
set -e
[ $# -gt 0 ] || { echo "usage: bash benches/image_versions.sh IMAGE..." >&2; exit 2; }
W=${TMPDIR:-/tmp}/cairn-image-versions; rm -rf $W; mkdir -p $W/src
bytes() { find "$1" -type f -printf '%s\n' | awk '{s+=$1} END {print s}'; }
run() { # name, init command, backup command, store directory
  local sizes=""
  eval "$2" >/dev/null 2>&1
  for image in "${IMAGES[@]}"; do
    cp --sparse=always "$image" $W/src/disk.img
    eval "$3" >/dev/null 2>&1
    sizes="$sizes $(bytes $4)"
  done
  echo "$1:$sizes"
  rm -rf $4
}
IMAGES=("$@")
for c in ${CAIRNS:-$HOME/.cache/cairn/target/release/cairn}; do
  run "$c" "$c --store $W/st init" "$c --store $W/st --no-progress backup $W/src" $W/st
done
if command -v restic >/dev/null; then
  export RESTIC_PASSWORD=cairn-bench RESTIC_REPOSITORY=$W/restic
  run restic "restic init" "restic backup -q $W/src" $W/restic
fi
rm -rf $W
