#!/bin/sh
# Install the Debian packages a make target needs (first use only), by group:
#   build   what `make binary` needs beyond the venv: binutils (PyInstaller runs objdump
#           and strip; ldd comes with libc-bin, which every system has)
#   guest   a panic in QEMU with an image made by `kdump-agent mkinitrd` (`make demo`), and
#           the storage tools the harness's tool guests run (tests/harness/toolguest.py)
#   test    the rest of `make test` and `make bench`: the servers the network targets are
#           tested against (tgt: the iSCSI target), the tools the integration tests call
#           (open-iscsi: iscsistart, packed into test guests), debootstrap, and crash (the
#           e2e cases open a saved dump in it, tests/harness/crashtool.py), and strace (what the
#           frozen program asks the kernel for at start, tests/integration/test_binary.py)
# `sh tools/install-deps.sh build guest test` installs everything.
set -eu
[ "$#" -gt 0 ] || { echo "usage: $0 build|guest|test..." >&2; exit 2; }
PACKAGES=""
for group in "$@"; do
    case "$group" in
    build) PACKAGES="$PACKAGES binutils" ;;
    guest) PACKAGES="$PACKAGES qemu-system-x86 qemu-utils dracut-core kexec-tools makedumpfile
                     busybox-static cpio e2fsprogs zstd kmod udev util-linux
                     lvm2 mdadm thin-provisioning-tools multipath-tools fdisk" ;;
    test) PACKAGES="$PACKAGES strace socat dnsmasq-base iproute2 openssh-server openssh-client nfs-ganesha
                    nfs-ganesha-vfs rpcbind groff-base debootstrap open-iscsi tgt crash" ;;
    *) echo "$0: unknown group $group (build, guest, test)" >&2; exit 2 ;;
    esac
done
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
echo "== installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# Install, never start: the tests run their own sshd, dnsmasq, nfs-ganesha, rpcbind and tgtd on
# loopback or in network namespaces, and a package's service must not listen on this
# machine's interfaces.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
