"""The crashkernel= estimate: its rules, its parts, and the sizes read from the files."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.cpio import newc
from kdump_agent.config import TargetKind, parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import estimate as est
from kdump_agent.host import sizing
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.imagesize import initramfs_unpacked_bytes, kernel_memory
from kdump_agent.host.sizing import estimate_here
from kdump_agent.host.stackpack import StoragePack
from kdump_agent.network.plan import NetworkPlan, VirtualLink

MIB, GIB, TIB = 1 << 20, 1 << 30, 1 << 40


def test_seed_rule_is_128m_plus_64m_per_tib() -> None:
    assert est.seed_rule(1 * GIB) == 128 * MIB + 64 * 1024
    assert est.seed_rule(2 * TIB) == 256 * MIB


def test_makedumpfile_needs_two_bits_per_page_and_20m() -> None:
    assert est.makedumpfile_need(1 * TIB) == 64 * MIB + 20 * MIB


@pytest.mark.parametrize(("ram", "size"), [(512 * MIB, 0), (2 * GIB, 192 * MIB), (4 * GIB, 256 * MIB),
                                           (63 * GIB, 256 * MIB), (64 * GIB, 512 * MIB),
                                           (8 * TIB, 512 * MIB)])
def test_rhel9_table_reads_ranges_as_the_kernel_does(ram: int, size: int) -> None:
    assert est.rhel_table_size(est.RHEL9_DEFAULT, ram) == size


def benchmark_guest(kind: TargetKind | None, image_bytes: int) -> est.Estimate:
    """The 1 GiB guest `make bench` dumps, with Debian 12's cloud kernel."""
    parts = (est.Part("capture kernel", 53_968_896, "init_size"), est.runtime_part(),
             est.Part("initramfs, unpacked", image_bytes, "measured"), est.agent_part(kind),
             est.makedumpfile_part(1 * GIB))
    return est.Estimate(ram=1 * GIB, parts=parts, reserved=256 * MIB)


def test_benchmark_guest_comes_out_one_step_above_the_measured_floor() -> None:
    """The bench's guest: a local dump (image 35,768,832 bytes unpacked, the program laid out
    in it) works at 128M and fails at 120M."""
    estimate = benchmark_guest(TargetKind.FILESYSTEM, 35_768_832)
    assert est.megabytes(estimate.recommended) == "144M"
    assert est.megabytes(estimate.rhel9) == "192M"
    assert "reserved now: 256M (enough)" in est.report(estimate)


def test_ssh_dump_counts_the_larger_agent_and_errs_on_the_large_side() -> None:
    """The bench's guest: an SSH dump (image 49,069,568 bytes unpacked, paramiko's libraries
    in it) works at 152M and runs out of memory at 144M."""
    assert est.agent_part(TargetKind.SSH).size - est.agent_part(None).size == (43596 - 20536) * 1024
    assert est.megabytes(benchmark_guest(TargetKind.SSH, 49_069_568).recommended) == "176M"


def test_a_vlan_on_a_bond_stays_within_two_steps_above_its_measured_floor() -> None:
    """`make bench`: SSH over a VLAN on a bond works at 176M and fails at 160M; its image
    carries bonding and 8021q with what they load (907,823 bytes of modules more than the plain
    SSH one)."""
    plain = benchmark_guest(TargetKind.SSH, 49_069_568 + 907_823)
    with_links = est.Estimate(ram=plain.ram, parts=(*plain.parts, est.links_part(("bonding", "8021q"))),
                              reserved=plain.reserved)
    assert 176 * MIB <= with_links.recommended <= 176 * MIB + 32 * MIB
    assert est.megabytes(with_links.recommended) == "192M"


def test_small_parts_still_get_the_seed_rule() -> None:
    estimate = est.Estimate(ram=8 * GIB, parts=(est.Part("x", 10 * MIB, ""),), reserved=0)
    assert estimate.recommended == 144 * MIB  # 128M + 0.5M, rounded up to 16M
    assert est.report(estimate)[-1] == "reserved now: nothing"


def test_grub_line_keeps_the_other_options_and_replaces_crashkernel() -> None:
    grub = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=128M"\nGRUB_CMDLINE_LINUX=""\n'
    advice = est.grub_advice(160 * MIB, grub, "/etc/default/grub")
    assert advice[1] == '  GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=160M"'
    assert advice[2] == "then run `update-grub` and reboot."


def test_kernel_memory_is_init_size_from_the_bzimage_header(tmp_path: Path) -> None:
    header = bytearray(0x400)
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", header, 0x206, 0x020F)
    struct.pack_into("<I", header, 0x260, 53_968_896)
    (tmp_path / "vmlinuz").write_bytes(bytes(header))
    assert kernel_memory(str(tmp_path / "vmlinuz"))[0] == 53_968_896
    (tmp_path / "Image").write_bytes(bytes(1000))
    assert kernel_memory(str(tmp_path / "Image")) == (
        4000, f"{tmp_path}/Image: no bzImage header; its size x 4")


def test_initramfs_size_is_every_archive_unpacked(tmp_path: Path) -> None:
    early = newc({"kernel/x86/microcode/GenuineIntel.bin": b"u" * 1000})
    main = newc({"init": b"#!/bin/sh\n", "usr/sbin/kdump-agent": b"a" * 50_000})
    image = tmp_path / "initramfs.img"
    image.write_bytes(early + bytes(512 - len(early) % 512) + gzip.compress(main))
    assert initramfs_unpacked_bytes(str(image)) == len(early) + len(main)


def test_zstd_archive_after_an_early_cpio_goes_to_zstd_alone(tmp_path: Path, mocker: Any) -> None:
    early = newc({"early_cpio": b"1\n"})
    image = tmp_path / "initramfs.img"
    image.write_bytes(early + b"\x28\xb5\x2f\xfd" + b"frame")
    seen: list[bytes] = []

    def zstd(argv: list[str], consume: Any, **_: Any) -> tuple[int, subprocess.CompletedProcess[bytes]]:
        seen.append(Path(argv[-1]).read_bytes())
        return 4096, subprocess.CompletedProcess(argv, 0, b"", b"")

    run = mocker.patch("kdump_agent.system.run_streaming", side_effect=zstd)
    assert initramfs_unpacked_bytes(str(image)) == len(early) + 4096
    assert run.call_args.args[0][:3] == ["zstd", "-dc", "--"]
    assert seen == [b"\x28\xb5\x2f\xfd" + b"frame"]


def test_initramfs_that_is_not_an_archive_is_reported_with_its_offset(tmp_path: Path) -> None:
    image = tmp_path / "initramfs.img"
    image.write_bytes(gzip.compress(newc({"init": b"x"})) + b"garbage!")
    with pytest.raises(KdumpError, match=r"unknown data at byte \d+"):
        initramfs_unpacked_bytes(str(image))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda a: a[:54] + b"zzzzzzzz" + a[62:],
     r"broken cpio header at byte 0 \(b'zzzzzzzz' is not a hex number\)"),
    (lambda a: a[:94] + b"-0000001" + a[102:],
     r"broken cpio header at byte 0 \(b'-0000001' is not a hex number\)"),
    (lambda a: a[:94] + b"00010000" + a[102:], r"the cpio entry at byte 0 is cut short"),
    (lambda a: gzip.compress(a)[:-12], r"the compressed archive at byte 0 is cut short"),
], ids=["garbage size", "negative name size", "name past the end", "truncated gzip"])
def test_corrupt_or_truncated_initramfs_is_a_kdump_error_naming_the_image(tmp_path: Path, damage: Any,
                                                                          message: str) -> None:
    image = tmp_path / "initramfs.img"
    image.write_bytes(damage(newc({"init": b"#!/bin/sh\n"})))
    with pytest.raises(KdumpError, match=rf"^{tmp_path}/initramfs.img: {message}"):
        initramfs_unpacked_bytes(str(image))


def test_missing_files_are_counted_as_the_benchmark_machine_and_say_so(tmp_path: Path) -> None:
    paths = HostPaths(iomem=str(tmp_path / "iomem"), crash_size=str(tmp_path / "kexec_crash_size"))
    (tmp_path / "iomem").write_text("00000000-00000fff : Reserved\n00001000-3fffffff : System RAM\n"
                                    "  01000000-01ffffff : Kernel code\n")
    (tmp_path / "kexec_crash_size").write_text("0\n")
    estimate = estimate_here(None, paths, kernel=str(tmp_path / "vmlinuz"), image=str(tmp_path / "img"))
    assert estimate.ram == 1 * GIB - 4096
    kernel, _, image = estimate.parts[:3]
    assert kernel.size == est.KERNEL_STAND_IN and "counted as Debian 12's cloud kernel" in kernel.source
    assert image.size == est.INITRAMFS_STAND_IN and "not built yet" in image.source
    assert estimate.reserved == 0


def test_a_stacked_target_without_an_image_counts_its_tools(tmp_path: Path, mocker: Any) -> None:
    """Before the first build the image is the benchmark's stand-in, which has no lvm: the
    estimate adds lvm and the libraries only it needs, so the first reservation suffices."""
    lvm = tmp_path / "lvm"
    lvm.write_bytes(b"x" * 3000)
    only_lvm, shared = tmp_path / "libdevmapper.so.1", tmp_path / "libc.so.6"
    only_lvm.write_bytes(b"x" * 500)
    shared.write_bytes(b"x" * 9000)
    mocker.patch.object(sizing, "storage_pack", return_value=StoragePack(programs=[str(lvm)]))
    mocker.patch.object(sizing, "libraries", side_effect=lambda program: {str(only_lvm), str(shared)}
                        if program == str(lvm) else {str(shared)})
    config = parse("ext4 /dev/mapper/vgsys-root\n", "/etc/kdump.conf")
    part = sizing.storage_part(config, str(tmp_path / "not-built.img"))
    assert part is not None and (part.name, part.size) == ("storage tools", 3500)
    built = tmp_path / "built.img"
    built.write_bytes(b"image")
    assert sizing.storage_part(config, str(built)) is None



def test_a_server_behind_a_vlan_on_a_bond_counts_what_the_links_cost(mocker: Any) -> None:
    plan = NetworkPlan(interface="bond0.77", mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                       hostname=None, links=(VirtualLink("bond", "bond0", ("eth0", "eth1")),
                                             VirtualLink("vlan", "bond0.77", ("bond0",), (("id", "77"),))))
    mocker.patch.object(sizing, "record_here", return_value=mocker.Mock(**{"plan.return_value": plan}))
    part = sizing.network_links_part(parse("nfs filer.example:/export\n", "/etc/kdump.conf"))
    assert part is not None
    assert part.size == est.LINKS_RUNTIME
    assert part.source.startswith("bonding, 8021q loaded and the links built")


def test_a_plain_nic_a_generic_image_or_a_local_target_adds_no_links_part(mocker: Any) -> None:
    plain = NetworkPlan(interface="eth0", mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                        hostname=None)
    record = mocker.patch.object(sizing, "record_here",
                                 return_value=mocker.Mock(**{"plan.return_value": plain}))
    assert sizing.network_links_part(parse("nfs filer.example:/export\n", "k")) is None
    assert sizing.network_links_part(parse("ext4 /dev/vdb\n", "k")) is None
    generic = parse("nfs filer.example:/export\ndracut_args --no-hostonly\n", "k")
    assert sizing.network_links_part(generic) is None
    assert record.call_count == 1
