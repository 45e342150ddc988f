#!/bin/sh
# The same dump kdump-agent makes, by shell: the log first, then the vmcore, sync, reboot.
if [ -e /proc/vmcore ]; then
    echo "<6>BASELINE: hook starts" > /dev/kmsg
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    mkdir -p /kdumproot
    rc=0
    if mount -t ext4 /dev/vda /kdumproot; then
        dir=/kdumproot/var/crash/127.0.0.1-$(date +%Y-%m-%d-%H:%M:%S)
        mkdir -p "$dir"
        makedumpfile --dump-dmesg /proc/vmcore "$dir/vmcore-dmesg.txt"
        echo "BASELINE: MemFree at collector start: $(sed -n 's/^MemFree: *//p' /proc/meminfo)"
        makedumpfile -l --message-level 7 -d 31 /proc/vmcore "$dir/vmcore-incomplete"
        rc=$?
        [ $rc -eq 0 ] && mv "$dir/vmcore-incomplete" "$dir/vmcore"
        sync
        umount /kdumproot
    else
        rc=32
    fi
    echo "BASELINE: done rc=$rc"
    echo b > /proc/sysrq-trigger
fi
