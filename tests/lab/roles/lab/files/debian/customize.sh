#!/bin/sh
# mmdebstrap's customize hook for the lab's Debian guest: ROOT is the finished root filesystem.
# Runs on the build machine; chroot only for systemctl, which edits unit links offline.
set -eu
root=$1
here=$(cd "$(dirname "$0")" && pwd)

install -m 0644 "$here/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/90-multihv-lab.cfg"

# The root filesystem is found by label (build-image.sh makes it). No fsck pass: the journal
# replays at mount, and a boot under TCG should not spend seconds checking a clean disk.
printf 'LABEL=root / ext4 defaults,noatime,errors=remount-ro 0 0\n' > "$root/etc/fstab"

# Every instance gets its own host keys and machine id at its first boot (cloud-init's ssh module,
# systemd), not copies of the build's.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Nor the build machine's name.
rm -f "$root/etc/hostname"

# A NIC left to DHCP where no server answers (the lab's bridges have none) must not hold the boot
# for dhclient's default minute.
printf '\n# multihv lab guest: give up on DHCP early.\ntimeout 15;\n' >> "$root/etc/dhcp/dhclient.conf"

# Timers and jobs that only cost time in a short-lived test guest. The guest agent needs no
# enabling: udev starts it when its virtio-serial port (org.qemu.guest_agent.0) appears.
# The console is the serial port: no gettys on virtual terminals nobody sees.
chroot "$root" systemctl mask --quiet apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer dpkg-db-backup.timer \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount getty-static.service getty@tty1.service

# apt's lists and archives are not needed in the image (the guest reaches no mirror).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
