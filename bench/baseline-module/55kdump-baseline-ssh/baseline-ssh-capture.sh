#!/bin/sh
# The SSH dump of RHEL's kdump, by shell: DHCP on eth0, the log, then makedumpfile's
# flattened stream through OpenSSH's `cat`, renamed to vmcore.flat once complete, reboot.
# One login: the later ssh commands share the first one's connection (ControlMaster).
# /etc/baseline-ssh/target sets server, port and path; id and known_hosts sit beside it.
if [ -e /proc/vmcore ]; then
    echo "<6>BASELINE: hook starts" > /dev/kmsg
    . /etc/baseline-ssh/target
    rc=0
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    ip link set lo up
    ip link set eth0 up
    if ! busybox udhcpc -i eth0 -f -q -n -t 10 -T 1 -s /usr/lib/baseline-ssh/udhcpc.script; then
        rc=64
    fi
    address=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\).*/\1/p')
    echo "<6>BASELINE: network up: $address" > /dev/kmsg
    mkdir -p /run/baseline-ssh
    set -- -F /dev/null -i /etc/baseline-ssh/id -p "$port" \
        -o UserKnownHostsFile=/etc/baseline-ssh/known_hosts -o GlobalKnownHostsFile=/dev/null \
        -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30 \
        -o ServerAliveInterval=10 -o ServerAliveCountMax=3 \
        -o ControlPath=/run/baseline-ssh/control "root@$server"
    dir=$path/$address-$(date +%Y-%m-%d-%H:%M:%S)
    if [ $rc -eq 0 ] && ! ssh -o ControlMaster=yes -o ControlPersist=yes -f -N "$@"; then
        rc=65
    fi
    if [ $rc -eq 0 ]; then
        echo "<6>BASELINE: logged in" > /dev/kmsg
        makedumpfile --dump-dmesg /proc/vmcore /run/baseline-ssh/vmcore-dmesg.txt
        ssh "$@" "umask 0077 && mkdir -p $dir && cat > $dir/vmcore-dmesg.txt" \
            < /run/baseline-ssh/vmcore-dmesg.txt || rc=66
        echo "<6>BASELINE: log sent" > /dev/kmsg
    fi
    if [ $rc -eq 0 ]; then
        echo "BASELINE: MemFree at collector start: $(sed -n 's/^MemFree: *//p' /proc/meminfo)"
        { makedumpfile -F -l --message-level 7 -d 31 /proc/vmcore
          echo $? > /run/baseline-ssh/collector-rc; } | ssh "$@" "umask 0077 && cat > $dir/vmcore-incomplete" \
            || rc=67
        echo "<6>BASELINE: stream sent" > /dev/kmsg
        [ $rc -eq 0 ] && rc=$(cat /run/baseline-ssh/collector-rc)
        if [ "$rc" -eq 0 ]; then
            ssh "$@" "mv $dir/vmcore-incomplete $dir/vmcore.flat" || rc=68
        fi
        ssh -O exit "$@" 2> /dev/null
    fi
    echo "<6>BASELINE: done rc=$rc" > /dev/kmsg
    echo b > /proc/sysrq-trigger
fi
