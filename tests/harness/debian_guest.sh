#!/bin/sh
# Test-only driver of a Debian test system (harness/debian_system.py installs it as
# /usr/local/sbin/kdump-test, run once per boot by kdump-test.service). What this boot is for
# comes from kdumptest= on the kernel command line; kdumpdisks=, kdumpexport= and
# kdumpexportto= say which disks a mode works on. Every line the host looks for starts with
# "KDUMP-TEST:".
arg() { sed -n "s/\(^\|.* \)$1=\([^ ]*\).*/\2/p" /proc/cmdline; }
say() { echo "KDUMP-TEST: $*" > /dev/console; }
mode=$(arg kdumptest)

report() {
    say "root $(findmnt -no SOURCE /) crash $(findmnt -no SOURCE -T /var/crash)"
    kdump-agent status > /dev/console 2>&1; say "status rc=$?"
    kdump-agent estimate > /dev/console 2>&1; say "estimate rc=$?"
}

# The root file system moves onto an LV of a new VG on the blank disk $1, as an admin moves a
# server onto LVM: copy, fstab, and the LV's own initramfs (initramfs-tools' lvm2 hook) so that
# it boots with root=/dev/mapper/vgsys-root. The new initramfs is also left in /root of the
# old root, where the host reads it back (QEMU boots it with -initrd).
migrate_lvm() {
    pvcreate -ff -y "$1" && vgcreate vgsys "$1" && lvcreate -y -n root -l 100%FREE vgsys &&
        mkfs.ext4 -q -L root /dev/mapper/vgsys-root && mount /dev/mapper/vgsys-root /mnt &&
        cp -ax /. /mnt/ || return 1
    echo "/dev/mapper/vgsys-root / ext4 errors=remount-ro 0 1" > /mnt/etc/fstab
    for fs in dev proc sys run; do mount --bind /$fs /mnt/$fs || return 1; done
    chroot /mnt update-initramfs -u -k all > /dev/console 2>&1 || return 1
    cp /mnt/boot/initrd.img-* /root/ || return 1
    for fs in run sys proc dev; do umount /mnt/$fs; done
    umount /mnt && vgchange -an vgsys
}

# /var/crash moves onto a new md RAID1 of the blank disks $1 and $2. --assume-clean: both
# disks are all zeros, so they already agree and no resync runs under the tests.
make_md() {
    mdadm --create /dev/md/crash --run --assume-clean --level=1 --raid-devices=2 \
        --metadata=1.2 --name=crash "$1" "$2" > /dev/console 2>&1 &&
        mkfs.ext4 -q -L crash /dev/md/crash || return 1
    echo "UUID=$(blkid -o value -s UUID /dev/md/crash) /var/crash ext4 defaults 0 2" >> /etc/fstab
    mdadm --detail --scan >> /etc/mdadm/mdadm.conf
    update-initramfs -u > /dev/console 2>&1 || return 1
    mount /var/crash && chmod 0755 /var/crash && umount /var/crash
}

# The host pulls one of the array's disks out of the running machine (QEMU device_del) when
# it reads "remove-disk"; wait until md runs without it, as it would after a disk died.
degrade_md() {
    say "remove-disk"
    for _ in $(seq 60); do
        mdadm /dev/md/crash --fail detached --remove detached > /dev/null 2>&1
        if mdadm --detail /dev/md/crash | grep -q "State : .*degraded"; then
            cat /proc/mdstat > /dev/console
            say "degraded"
            return 0
        fi
        sleep 1
    done
    mdadm --detail /dev/md/crash > /dev/console 2>&1
    return 1
}

# A copy of the file system mounted on $1 onto the blank disk $2, frozen while dd reads it so
# the copy is consistent: the host reads the dumps from that copy with debugfs.
export_fs() {
    src=$(findmnt -no SOURCE "$1")
    sync && fsfreeze -f "$1" || return 1
    dd if="$src" of="$2" bs=1M conv=sparse,fsync 2> /dev/console; rc=$?
    fsfreeze -u "$1"
    return $rc
}

case "$mode" in
report)
    report
    systemctl poweroff ;;
migrate-lvm)
    migrate_lvm "$(arg kdumpdisks)"; say "migrate-lvm rc=$?"
    systemctl poweroff ;;
make-md)
    # shellcheck disable=SC2046  # two disk names, comma-separated on the command line
    make_md $(arg kdumpdisks | tr , ' '); say "make-md rc=$?"
    systemctl poweroff ;;
panic|panic-degraded)
    say "service $(systemctl is-active kdump-agent.service)"
    kdump-agent status > /dev/console 2>&1; rc=$?; say "status rc=$rc"
    if [ "$rc" = 0 ] && [ "$mode" = panic-degraded ]; then degrade_md || rc=1; fi
    if [ "$rc" = 0 ]; then say "panicking"; kdump-agent test --yes > /dev/console 2>&1; fi
    systemctl poweroff ;;
check)
    for d in /var/crash/*/; do
        [ "$d" = /var/crash/lost+found/ ] && continue  # /var/crash is a file system's root
        say "dump $d"; ls -l "$d" > /dev/console
    done
    if [ -n "$(arg kdumpexport)" ]; then
        export_fs "$(arg kdumpexport)" "$(arg kdumpexportto)"; say "export rc=$?"
    fi
    say "check done"
    systemctl poweroff ;;
esac
