#!/bin/sh
# mmdebstrap's essential hook for the lab's Debian guest: runs before the kernel is installed, so
# that its initramfs is built once, small. ROOT is the root filesystem being built.
set -eu
root=$1

# Only the drivers of the disks the guest boots from and of the CD-ROM its config drive is on: virtio
# (blk, and scsi for a CD-ROM on q35), IDE (ata_piix: the pc machine's CD-ROM), sd and sr. ext4 is built
# into the cloud kernel; AHCI is not in it at all, so a SATA CD-ROM (q35's default) stays invisible.
# cloud-init's generator looks for the drive's label early in the boot, before udev loads drivers from
# the root filesystem, and disables cloud-init for that boot when it finds none: sr_mod must be here.
# Smaller than the default initramfs: less for the boot loader to read and the kernel to unpack, slow
# under TCG. No resume device to wait for.
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
printf 'MODULES=list\nRESUME=none\n' > "$root/etc/initramfs-tools/conf.d/multihv-lab.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod sr_mod ata_piix > "$root/usr/share/initramfs-tools/modules.d/multihv-lab"
