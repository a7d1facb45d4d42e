#!/bin/sh
# Build the lab's Debian 12 guest: OUTDIR/debian-12-<recipe digest>.qcow2, a self-booting disk
# (MBR + syslinux on a FAT boot partition, ext4 root) with cloud-init and the QEMU guest agent.
# OUTDIR/debian-12.qcow2 links to it. Built once per recipe (the files beside this script): when
# the image of this recipe exists the script only prints its path. Concurrent runs wait for one
# another (a lock in OUTDIR), so a build started in the background can be joined by a test.
# --print-path: print the path the image of this recipe has, built or not, and build nothing.
# Needs mmdebstrap, syslinux, syslinux-common, mtools, dosfstools, fdisk, e2fsprogs, qemu-img, and
# Debian's packages (bookworm); mounts nothing and uses no loop device. Prints the image's path.
set -eu

print_path=
if [ "${1:-}" = --print-path ]; then
    print_path=1
    shift
fi
if [ "$#" -ne 1 ]; then
    echo "usage: $0 [--print-path] OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
outdir=$(mkdir -p "$1" && cd "$1" && pwd)

digest=$(cd "$here" && cat build-image.sh essential.sh customize.sh cloud.cfg syslinux.cfg | sha256sum | cut -c1-12)
image=$outdir/debian-12-$digest.qcow2
link=$outdir/debian-12.qcow2
if [ -n "$print_path" ]; then
    echo "$image"
    exit 0
fi

exec 9>"$outdir/.debian-12.lock"
flock 9
if [ -f "$image" ]; then
    ln -sfn "$(basename "$image")" "$link"
    echo "$image"
    exit 0
fi

# What a build that was killed outright (SIGKILL, a power loss) left; none runs now, the lock is ours.
rm -rf --one-file-system "$outdir"/.debian-build.*

for tool in mmdebstrap syslinux mcopy mkfs.vfat sfdisk mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool not found (make deps installs the lab's packages)" >&2; exit 1; }
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || { echo "$0: $mbr not found (package syslinux-common)" >&2; exit 1; }

tmp=$(mktemp -d "$outdir/.debian-build.XXXXXX")
# --one-file-system: should mmdebstrap die with the chroot's /proc, /sys or /dev still mounted, those stay.
trap 'rm -rf --one-file-system "$tmp"' EXIT
trap 'exit 130' INT TERM
start=$(date +%s)

# The machine's own apt sources when they are bookworm's (its mirror, its proxy), else mmdebstrap's
# default mirror with updates and security.
set --
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ] && grep -q '^[^#]*bookworm' "$f"; then
        set -- "$@" "$f"
    fi
done

# systemd-sysv and udev: a real init (udev also starts the guest agent). ifupdown: cloud-init's
# ENI renderer, which renders network-config v2 matched by MAC (set-name through a udev rule);
# net-tools: its static routes (the default route) are `route add` lines.
# resolvconf: the NICs' nameservers reach /etc/resolv.conf (ifupdown's dns-nameservers).
# isc-dhcp-client: DHCP NICs. sudo: the default user's sudo rule. No Recommends (mmdebstrap's default).
mmdebstrap --variant=apt --quiet \
    --include=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,cloud-init,qemu-guest-agent,openssh-server,ifupdown,net-tools,resolvconf,isc-dhcp-client,netbase,iproute2,sudo \
    --essential-hook="sh '$here/essential.sh' \"\$1\"" \
    --customize-hook="sh '$here/customize.sh' \"\$1\"" \
    bookworm "$tmp/root" "$@"
echo "root filesystem: $(( $(date +%s) - start )) s" >&2

# The disk: MBR (syslinux's), partition 1 FAT16 64 MiB (boot, active: kernel, initrd, syslinux),
# partition 2 ext4 (root, label root) to the end of a 3 GiB disk.
sector=512
boot_start=2048
boot_sectors=131072
root_start=$((boot_start + boot_sectors))
disk_sectors=$((3 * 1024 * 1024 * 2))
root_sectors=$((disk_sectors - root_start))
truncate -s $((disk_sectors * sector)) "$tmp/disk.raw"
printf 'label: dos\nstart=%d, size=%d, type=e, bootable\nstart=%d, size=%d, type=83\n' \
    "$boot_start" "$boot_sectors" "$root_start" "$root_sectors" | sfdisk --quiet "$tmp/disk.raw"
dd if="$mbr" of="$tmp/disk.raw" bs=440 count=1 conv=notrunc status=none

# -h: the partition's start as the FAT's hidden sectors, where syslinux's boot sector looks for itself.
# Its output (a warning that the image is larger than the filesystem, as meant) only on failure.
out=$(mkfs.vfat -F 16 -n BOOT -h "$boot_start" --offset="$boot_start" "$tmp/disk.raw" $((boot_sectors / 2)) 2>&1) \
    || { echo "$out" >&2; exit 1; }
syslinux --install --offset $((boot_start * sector)) "$tmp/disk.raw"
kernel=$(find "$tmp/root/boot" -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$tmp/root/boot" -name 'initrd.img-*' | sort -V | tail -n 1)
fat="$tmp/disk.raw@@$((boot_start * sector))"
mcopy -i "$fat" "$kernel" ::/vmlinuz
mcopy -i "$fat" "$initrd" ::/initrd.img
mcopy -i "$fat" "$here/syslinux.cfg" ::/syslinux.cfg

mkfs.ext4 -q -L root -d "$tmp/root" -E offset=$((root_start * sector)) "$tmp/disk.raw" $((root_sectors / 2))k

qemu-img convert -c -f raw -O qcow2 "$tmp/disk.raw" "$tmp/image.qcow2"
mv -f "$tmp/image.qcow2" "$image"
ln -sfn "$(basename "$image")" "$link"
# Images of older recipes are of no further use.
for old in "$outdir"/debian-12-*.qcow2; do
    [ "$old" = "$image" ] || rm -f "$old"
done
echo "built $image in $(( $(date +%s) - start )) s ($(du -m "$image" | cut -f1) MiB)" >&2
echo "$image"
