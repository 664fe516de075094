"""grace.py: the kernel's grace period, reached through membarrier(2)."""

import pytest

from amphora_agent.dataplane import grace


def test_this_kernel_offers_a_grace_period_and_it_returns():
    # CI's and the SEs' kernels (Debian 12): membarrier is built in.
    assert grace.available()
    grace.wait()


def test_an_unknown_architecture_has_none(monkeypatch):
    monkeypatch.setattr(grace.platform, 'machine', lambda: 'vax')
    assert not grace.available()
    with pytest.raises(grace.GraceUnavailable):
        grace.wait()


def test_a_refusing_kernel_has_none(monkeypatch):
    """nohz_full kernels refuse MEMBARRIER_CMD_GLOBAL (EINVAL); QUERY then
    leaves its bit out."""
    monkeypatch.setattr(grace, '_SYSCALLS', {grace.platform.machine(): -1})
    assert not grace.available()


def test_a_kernel_without_the_global_command_has_none(monkeypatch):
    """QUERY answers the commands the kernel supports: a nohz_full kernel
    leaves MEMBARRIER_CMD_GLOBAL's bit out (and refuses it)."""
    monkeypatch.setattr(grace, '_syscall', lambda cmd: 0b1000)
    assert not grace.available()
