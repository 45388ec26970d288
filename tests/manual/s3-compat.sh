#!/usr/bin/env bash
# Push, attach, browse and restore against an S3-compatible server that the
# test suite does not use: moto's server (PyPI), started on 127.0.0.1.
#
#   bash tests/manual/s3-compat.sh [path/to/cairn]
#
# Needs python3 with venv; installs moto[server] and boto3 into a
# throwaway virtualenv. Exits non-zero on any difference.
set -euo pipefail
CAIRN="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}/release/cairn}"
WORK="$(mktemp -d)"
trap 'kill "${SERVER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q 'moto[server]' boto3
PORT=$((20000 + RANDOM % 10000))
"$WORK/venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
export AWS_ACCESS_KEY_ID=moto AWS_SECRET_ACCESS_KEY=moto-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
ENDPOINT="http://127.0.0.1:$PORT"
for _ in $(seq 50); do curl -s "$ENDPOINT" >/dev/null && break; sleep 0.2; done
"$WORK/venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$ENDPOINT').create_bucket(Bucket='compat')"

SRC="$WORK/src"; mkdir -p "$SRC"
cp -a "$(dirname "$0")/../../store/src" "$SRC/code"
head -c 20000000 /dev/urandom > "$SRC/random.bin"
S="$WORK/store"
"$CAIRN" --store "$S" --endpoint-url "$ENDPOINT" --path-style remote add moto s3://compat/cairn --default
"$CAIRN" --store "$S" backup "$SRC" --no-progress
echo "more" >> "$SRC/code/lib.rs"
"$CAIRN" --store "$S" backup "$SRC" --no-progress
"$CAIRN" --store "$S" forget --keep-last 1 && "$CAIRN" --store "$S" gc --compact-threshold 0.05 && "$CAIRN" --store "$S" push
rm -rf "$S"
"$CAIRN" --remote s3://compat/cairn --endpoint-url "$ENDPOINT" --path-style datasets
"$CAIRN" --remote s3://compat/cairn --endpoint-url "$ENDPOINT" --path-style restore latest --to "$WORK/direct"
diff -r "$SRC" "$WORK/direct"
"$CAIRN" --store "$WORK/attached" --endpoint-url "$ENDPOINT" --path-style attach s3://compat/cairn
"$CAIRN" --store "$WORK/attached" restore latest --to "$WORK/restored"
diff -r "$SRC" "$WORK/restored"
"$CAIRN" --store "$WORK/attached" check --read-data
echo "s3-compat: push, gc propagation, --remote restore and attach+restore all identical against moto"
