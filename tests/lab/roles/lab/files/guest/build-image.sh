#!/bin/sh
# Build the tiny "tick" guest image: OUTDIR/tick.raw (1 MiB) and OUTDIR/tick.qcow2.
# Needs only nasm and qemu-img. Idempotent: rebuilds from scratch every run.
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
outdir=$1
mkdir -p "$outdir"

for tool in nasm qemu-img; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d "$outdir/.tick-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

nasm -f bin -o "$tmp/boot.bin" "$here/tick.asm"
size=$(wc -c < "$tmp/boot.bin" | tr -d ' ')
if [ "$size" -ne 512 ]; then
    echo "$0: boot sector is $size bytes, expected 512" >&2
    exit 1
fi

# sector 0: boot sector; sector 1: zeroed record area; rest zero up to 1 MiB.
dd if=/dev/zero of="$tmp/tick.raw" bs=1024 count=1024 status=none
dd if="$tmp/boot.bin" of="$tmp/tick.raw" bs=512 count=1 conv=notrunc status=none

qemu-img convert -f raw -O qcow2 "$tmp/tick.raw" "$tmp/tick.qcow2"

mv -f "$tmp/tick.raw" "$outdir/tick.raw"
mv -f "$tmp/tick.qcow2" "$outdir/tick.qcow2"

echo "built $outdir/tick.raw ($(wc -c < "$outdir/tick.raw" | tr -d ' ') bytes, raw)"
echo "built $outdir/tick.qcow2 (qcow2, virtual size 1 MiB)"
