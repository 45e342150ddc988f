#!/bin/sh
# pre-mount hook: udev has loaded the drivers; save the dump. The agent ends in the final or
# failure action (reboot(2)). It returns 75 when mount_root_run_init mounted the root file
# system on /sysroot: then dracut's init goes on to switch to it and run its /sbin/init,
# where kdump-agent's root service saves the dump. Any other return means every action
# failed: never stay in the initramfs.
if [ -e /proc/vmcore ]; then
    # A timestamped line in the kernel log: the agent's start-up is measured from here.
    echo "<6>kdump-agent: initramfs hook starts the agent" > /dev/kmsg
    /usr/sbin/kdump-agent capture
    kdump_agent_status=$?
    if [ "$kdump_agent_status" -ne 75 ]; then
        echo "kdump-agent: capture returned (status $kdump_agent_status); rebooting" > /dev/kmsg
        echo 1 > /proc/sys/kernel/sysrq
        echo b > /proc/sysrq-trigger
    fi
    unset kdump_agent_status
fi
