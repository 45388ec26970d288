#!/bin/bash
# The index's size after gc (issue 18): 12 versions of a tree (/usr/share/doc
# and /usr/share/locale), 2% of the files edited per version, 3 kept and
# collected, in a zstd store; prints index bytes per live blob.
#   C=path/to/cairn bash benches/index_size.sh   (default: the debug build)
set -e
C=${C:-$HOME/.cache/cairn/target/debug/cairn}
W=${TMPDIR:-/tmp}/cairn-index-size; rm -rf $W; mkdir -p $W; cd $W
$C --store st init --compression zstd >/dev/null
mkdir src; cp -r /usr/share/doc src/doc; cp -r /usr/share/locale src/locale 2>/dev/null || true
du -sb src | cut -f1 | awk '{printf "source: %.1f MB\n", $1/1e6}'
n=0
for v in $(seq 1 12); do
  if [ $v -gt 1 ]; then
    find src -type f | awk -v v=$v 'NR % 50 == v % 50' | while read f; do echo "version $v" >> "$f"; done
  fi
  $C --store st --no-progress backup src >/dev/null
done
$C --store st forget --keep-last 3 >/dev/null
$C --store st gc >/dev/null
blobs=$($C --store st --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(k["blobs"] for k in s["kinds"]))')
ix=$(du -sb st/index | cut -f1); cont=$(du -sb st/containers | cut -f1)
echo "live blobs $blobs; index $ix bytes ($((ix / blobs)) B per live blob); containers $cont bytes; store $((ix + cont)) bytes"
ls -la st/index | awk '{print $5, $9}' | sort -n | tail -8
