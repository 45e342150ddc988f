"""The capture kernel's command line, from RHEL-like running command lines."""

from __future__ import annotations

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.host.cmdline import CAPTURE_DEFAULTS, capture_cmdline, param_name, split_params
from kdump_agent.host.defaults import Defaults, parse_defaults

DEFAULTS = " ".join(CAPTURE_DEFAULTS)


def test_rhel9_lvm_root_keeps_the_console_and_drops_root_storage_and_reservation() -> None:
    running = ("BOOT_IMAGE=(hd0,msdos1)/vmlinuz-5.14.0-427.el9.x86_64 root=/dev/mapper/rhel-root ro "
               "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap "
               "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet console=tty0 console=ttyS0,115200n8")
    assert capture_cmdline(running) == f"ro console=tty0 console=ttyS0,115200n8 {DEFAULTS}"


def test_encrypted_root_and_huge_pages_do_not_reach_the_capture_kernel() -> None:
    running = ("root=UUID=1f0c ro rd.luks.uuid=luks-9a7b rd.md.uuid=3c1e:77aa hugepagesz=1G hugepages=16 "
               "default_hugepagesz=1G cma=64M hugetlb_cma=2G memmap=2G$4G swiotlb=65536 log_buf_len=16M "
               "transparent_hugepage=always console=ttyS1")
    result = capture_cmdline(running).split()
    assert result[:2] == ["ro", "console=ttyS1"]
    for gone in ("rd.luks.uuid", "rd.md.uuid", "hugepages", "hugepagesz", "default_hugepagesz", "memmap",
                 "swiotlb", "log_buf_len"):
        assert not any(param_name(p) == gone for p in result), gone
    assert "cma=0" in result and "hugetlb_cma=0" in result and "cma=64M" not in result
    assert "transparent_hugepage=never" in result and "transparent_hugepage=always" not in result


def test_network_root_is_dropped_but_ip_is_kept_for_the_capture_kernel() -> None:
    running = "root=/dev/nfs netroot=nfs:10.0.0.1:/srv/root rd.iscsi.initiator=iqn.x ip=dhcp console=ttyS0"
    assert capture_cmdline(running) == f"ip=dhcp console=ttyS0 {DEFAULTS}"


def test_the_running_kernels_panic_and_cpu_count_are_replaced_not_doubled() -> None:
    result = capture_cmdline("console=ttyS0 panic=1 nr_cpus=8 irqpoll").split()
    assert result.count("irqpoll") == 1
    assert "panic=1" not in result and result.count("panic=10") == 1
    assert "nr_cpus=8" not in result and "nr_cpus=1" in result


def test_init_arguments_after_double_dash_and_rdinit_are_dropped() -> None:
    result = capture_cmdline("console=ttyS0 rdinit=/sbin/myinit quiet -- --single --debug")
    assert result == f"console=ttyS0 {DEFAULTS}"


def test_admin_remove_takes_names_or_exact_parameters_and_applies_to_the_defaults() -> None:
    running = "console=ttyS0 rootflags=nofail slub_nomerge mitigations=off mitigations=auto"
    result = capture_cmdline(running, remove=["slub_nomerge mitigations=off nokaslr"]).split()
    assert "slub_nomerge" not in result and "mitigations=off" not in result
    assert "mitigations=auto" in result
    assert "nokaslr" not in result


def test_admin_append_replaces_a_default_of_the_same_name_and_comes_last() -> None:
    result = capture_cmdline("console=ttyS0", append=["panic=30 rd.memdebug=2"]).split()
    assert "panic=10" not in result
    assert result[-2:] == ["panic=30", "rd.memdebug=2"]


def test_dashes_and_underscores_name_the_same_parameter() -> None:
    assert "hugetlb-cma=4G" not in capture_cmdline("hugetlb-cma=4G console=ttyS0")


def test_quoted_values_stay_one_parameter() -> None:
    assert split_params('console=ttyS0 dyndbg="file foo.c +p" quiet') == [
        "console=ttyS0", 'dyndbg="file foo.c +p"', "quiet"]


def test_defaults_file_reads_rhel_style_assignments_and_reports_other_keys() -> None:
    text = ('# edits for the capture kernel\n'
            'KDUMP_COMMANDLINE_APPEND="rd.memdebug=2 nr_cpus=2"  # more CPUs\n'
            "KDUMP_COMMANDLINE_REMOVE='nokaslr'\n"
            'KEXEC_ARGS="-d"\n')
    assert parse_defaults(text, "/etc/default/kdump-agent") == Defaults(
        append="rd.memdebug=2 nr_cpus=2", remove="nokaslr",
        ignored=("/etc/default/kdump-agent:4: KEXEC_ARGS",))


@pytest.mark.parametrize(("line", "message"), [
    ('KDUMP_COMMANDLINE_APPEND="nr_cpus=2', r"kdump-agent:2: unbalanced \""),
    ("KDUMP_COMMANDLINE_APPEND=a b", r"kdump-agent:2: a value with blanks must be quoted"),
    ("append nr_cpus=2", r"kdump-agent:2: expected KEY=\"value\""),
])
def test_defaults_file_errors_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(KdumpError, match=message):
        parse_defaults(f"# comment\n{line}\n", "/etc/default/kdump-agent")
