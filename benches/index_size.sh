#!/bin/bash
# The index's size after gc, and the whole store's beside restic's (issue 18):
# 12 versions of a tree, 2% of its files edited per version, the last 3 kept
# and collected, in a zstd store (cairn's default); restic 0.14, when
# installed, gets the same 12 versions, `forget --keep-last 3 --prune`.
#   C=path/to/cairn bash benches/index_size.sh   (default: the debug build)
#   SRC="dir ..."  the tree's sources (default: /usr/share/doc and
#                  /usr/share/locale); for a source tree of about 47 MB:
#                  SRC="$(ls -d ~/.cargo/registry/src/*/* | head -60)"
set -e
C=${C:-$HOME/.cache/cairn/target/debug/cairn}
W=${TMPDIR:-/tmp}/cairn-index-size; rm -rf $W; mkdir -p $W; cd $W
$C --store st init --compression zstd >/dev/null
mkdir src
for s in ${SRC:-/usr/share/doc /usr/share/locale}; do cp -r "$s" src/ 2>/dev/null || true; done
du -sb src | cut -f1 | awk '{printf "source: %.1f MB\n", $1/1e6}'
restic=$(command -v restic || true)
if [ -n "$restic" ]; then
  export RESTIC_PASSWORD=cairn-bench RESTIC_REPOSITORY=$W/restic
  restic init >/dev/null 2>&1
fi
for v in $(seq 1 12); do
  if [ $v -gt 1 ]; then
    find src -type f | awk -v v=$v 'NR % 50 == v % 50' | while read f; do echo "version $v" >> "$f"; done
  fi
  $C --store st --no-progress backup src >/dev/null
  [ -z "$restic" ] || restic backup -q src >/dev/null
done
$C --store st forget --keep-last 3 >/dev/null
$C --store st gc >/dev/null
blobs=$($C --store st --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(k["blobs"] for k in s["kinds"]))')
ix=$(du -sb st/index | cut -f1); cont=$(du -sb st/containers | cut -f1); all=$(du -sb st | cut -f1)
echo "live blobs $blobs; index $ix bytes ($((ix / blobs)) B per live blob); containers $cont bytes; store $all bytes"
ls -la st/index | awk '{print $5, $9}' | sort -n | tail -8
if [ -n "$restic" ]; then
  restic forget -q --keep-last 3 --prune >/dev/null
  r=$(du -sb restic | cut -f1)
  echo "restic repository $r bytes; cairn's store is $(python3 -c "print(f'{$all / $r:.3f}')")x restic's"
fi
