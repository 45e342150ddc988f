#!/bin/bash
# kdump-agent's dracut module: a capture initramfs whose only job is to save the dump.
#
# `kdump-agent mkinitrd` calls dracut with `-m kdump-agent` and passes what to pack in the
# environment: KDUMP_AGENT_PROGRAM (the frozen agent laid out unpacked by mkinitrd,
# host/programdir.py: its executable and the libraries it loads), KDUMP_AGENT_CONF (the validated
# kdump.conf), KDUMP_AGENT_INSTALL (extra_bins, the core_collector program unless it is the
# makedumpfile installed below, and hook programs, one path a line, installed
# at the same path with what they need) and, when kdump.conf names no target,
# KDUMP_AGENT_TARGET (the file system that holds `path` on this machine, recorded as JSON);
# for the failure actions that need it, KDUMP_AGENT_ROOTFS (the root file system). For
# network targets: KDUMP_AGENT_NETWORK (how this host reaches the server, JSON),
# KDUMP_AGENT_KNOWN_HOSTS (the SSH server's pinned host keys) and KDUMP_AGENT_SSHKEY (the
# key file, packed at the same path, 0600). For a target (or root) on LVM, md RAID, multipath
# or iSCSI: KDUMP_AGENT_STORAGE (the stacks, JSON), whose tools come in KDUMP_AGENT_INSTALL.

# Only when asked for: this module turns an initramfs into a capture initramfs.
check() {
    return 255
}

depends() {
    echo base dash
    return 0
}

install() {
    if [[ ! -x $KDUMP_AGENT_PROGRAM/kdump-agent ]]; then
        derror "kdump-agent: KDUMP_AGENT_PROGRAM holds no kdump-agent executable: '$KDUMP_AGENT_PROGRAM'"
        return 1
    fi
    if [[ ! -f $KDUMP_AGENT_CONF ]]; then
        derror "kdump-agent: KDUMP_AGENT_CONF is not a file: '$KDUMP_AGENT_CONF'"
        return 1
    fi
    # The program's home is its executable's directory (found through /proc/self/exe, so the
    # link in /usr/sbin is only the name it is called by). The executable's own libraries come
    # from ldd; those it carries are in its directory, and libpython needs libm besides.
    inst_binary "$KDUMP_AGENT_PROGRAM/kdump-agent" /usr/lib/kdump-agent/kdump-agent
    cp -a --no-preserve=ownership "$KDUMP_AGENT_PROGRAM/." "${initdir}/usr/lib/kdump-agent/"
    ln_r /usr/lib/kdump-agent/kdump-agent /usr/sbin/kdump-agent
    inst_libdir_file "libm.so.*"
    inst_multiple blkid
    # The default collector, and what extracts the kernel log. mkinitrd refused a config whose
    # core_collector is not on this host and packs any other one through KDUMP_AGENT_INSTALL,
    # so a host without makedumpfile can still build an image for `core_collector cp`.
    inst_multiple -o makedumpfile
    inst_simple "$KDUMP_AGENT_CONF" /etc/kdump.conf
    if [[ -n $KDUMP_AGENT_TARGET ]]; then
        inst_simple "$KDUMP_AGENT_TARGET" /etc/kdump-agent/target.json
    fi
    if [[ -n $KDUMP_AGENT_ROOTFS ]]; then
        inst_simple "$KDUMP_AGENT_ROOTFS" /etc/kdump-agent/rootfs.json
    fi
    if [[ -n $KDUMP_AGENT_STORAGE ]]; then
        inst_simple "$KDUMP_AGENT_STORAGE" /etc/kdump-agent/storage.json
    fi
    # The agent brings up the target's storage stack, and only that: dracut's own lvm, mdraid,
    # dm, multipath and crypt modules, if dracut_args add them, must not assemble whatever they
    # find. Read after every other cmdline.d file, so these win.
    mkdir -p "${initdir}/etc/cmdline.d"
    echo "rd.lvm=0 rd.md=0 rd.dm=0 rd.multipath=0 rd.luks=0" > "${initdir}/etc/cmdline.d/99kdump-agent-storage.conf"
    if [[ -n $KDUMP_AGENT_NETWORK ]]; then
        inst_simple "$KDUMP_AGENT_NETWORK" /etc/kdump-agent/network.json
    fi
    if [[ -n $KDUMP_AGENT_KNOWN_HOSTS ]]; then
        inst_simple "$KDUMP_AGENT_KNOWN_HOSTS" /etc/kdump-agent/known_hosts
    fi
    if [[ -n $KDUMP_AGENT_SSHKEY ]]; then
        inst_simple "$KDUMP_AGENT_SSHKEY" "$KDUMP_AGENT_SSHKEY"
        chmod 0600 "${initdir}${KDUMP_AGENT_SSHKEY}"
    fi
    local _file
    while IFS= read -r _file; do
        [[ -n $_file ]] || continue
        if ! inst "$_file"; then
            derror "kdump-agent: cannot install $_file"
            return 1
        fi
    done <<< "$KDUMP_AGENT_INSTALL"
    inst_multiple -o /etc/localtime
    inst_hook cmdline 95 "$moddir/kdump-agent-root.sh"
    inst_hook pre-mount 01 "$moddir/kdump-agent-capture.sh"
}
