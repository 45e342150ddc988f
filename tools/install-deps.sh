#!/bin/sh
# Install the Debian packages that building, testing and the demo need (first use only).
set -eu
PACKAGES="qemu-system-x86 qemu-utils dracut-core kexec-tools makedumpfile busybox-static cpio
e2fsprogs socat zstd kmod udev util-linux binutils dnsmasq-base iproute2 openssh-server openssh-client
nfs-ganesha nfs-ganesha-vfs rpcbind groff-base debootstrap"
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
echo "== installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# Install, never start: the tests run their own sshd, dnsmasq, nfs-ganesha and rpcbind on
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
