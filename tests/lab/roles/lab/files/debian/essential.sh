#!/bin/sh
# mmdebstrap's essential hook for the lab's Debian guest: runs before the kernel is installed, so
# that its initramfs is built once, small. ROOT is the root filesystem being built.
set -eu
root=$1

# Only the drivers of the disks the guest boots from (virtio, and SATA/IDE for other machine
# types; ext4 is built into the cloud kernel) and of the CD-ROM its config drive is on: cloud-init's
# generator looks for the drive's label early in the boot, before udev loads drivers from the root
# filesystem, and disables cloud-init for the boot when it finds none. Smaller than the default
# initramfs: less for the boot loader to read and the kernel to unpack, slow under TCG.
# No resume device to wait for.
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
printf 'MODULES=list\nRESUME=none\n' > "$root/etc/initramfs-tools/conf.d/multihv-lab.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod sr_mod ahci ata_piix > "$root/usr/share/initramfs-tools/modules.d/multihv-lab"
