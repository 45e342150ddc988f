#!/bin/sh
# Driver of the bench's full Debian systems (harness/peer_system.py installs it as
# /usr/local/sbin/kdump-test, run once per boot by kdump-test.service): one with Debian's
# kdump-tools, one with our package. Both are driven alike, so that the two are panicked the
# same way: check that the system's own service has loaded the capture kernel
# (/sys/kernel/kexec_crash_loaded; both services are oneshot units this one runs after, the
# first boot's build of the capture initramfs included), then, by kdumptest=:
#   armed  say what the service made (its capture initramfs) and power off: the host caches
#          the disk after this first boot, whose service builds that initramfs;
#   panic  sysrq-c.
# Every line the host looks for starts with "KDUMP-TEST:".
say() { echo "KDUMP-TEST: $*" > /dev/console; }
mode=$(sed -n 's/\(^\|.* \)kdumptest=\([^ ]*\).*/\2/p' /proc/cmdline)
deadline=60  # seconds of margin: the services have ended when this unit starts

loaded() {
    waited=0
    while [ "$(cat /sys/kernel/kexec_crash_loaded)" != 1 ]; do
        [ "$waited" -ge "$deadline" ] && return 1
        sleep 1; waited=$((waited + 1))
    done
}

# What the service left: its state and the capture initramfs it loads.
service_report() {
    if command -v kdump-config > /dev/null; then
        systemctl status --no-pager kdump-tools.service > /dev/console 2>&1
        kdump-config status > /dev/console 2>&1
        say "capture initrd $(readlink -f /var/lib/kdump/initrd.img)"
        say "kexec $(cat /var/crash/kexec_cmd)"
    else
        systemctl status --no-pager kdump-agent.service > /dev/console 2>&1
        say "capture initrd $(ls /boot/initramfs-*kdump.img)"
    fi
}

if loaded; then
    say "loaded"
else
    say "not loaded after ${deadline} s"
    service_report
    systemctl poweroff
    exit 1
fi
case "$mode" in
armed)
    service_report
    sync
    systemctl poweroff ;;
panic)
    sync
    say "panicking"
    echo c > /proc/sysrq-trigger ;;
esac
