#!/bin/sh
# pre-mount hook: udev has loaded the drivers; save the dump. The agent ends in the final or
# failure action (reboot(2)); it returns only if every action failed.
if [ -e /proc/vmcore ]; then
    /usr/sbin/kdump-agent capture
    echo "kdump-agent: capture returned (status $?); rebooting" > /dev/kmsg
    echo 1 > /proc/sys/kernel/sysrq
    echo b > /proc/sysrq-trigger
fi
