"""Wait until no running BPF program can still hold what it read before.

The SE program runs under RCU (XDP in the NAPI softirq): once a listener
entry points at a new ring extent, a packet already in the program may
still read the old one.  synchronize_rcu() waits for every such reader;
userspace reaches it through membarrier(MEMBARRIER_CMD_GLOBAL), which the
kernel implements as exactly that on a host with more than one CPU (with
one, no program runs while this process does -- not so on a PREEMPT_RT
kernel, where softirqs are preemptible: not a kernel for an SE).  Where
membarrier is missing (another architecture, compiled out, nohz_full), the
dataplane does not move rings.
"""

import ctypes
import errno
import functools
import os
import platform

MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_CMD_GLOBAL = 1
# membarrier(2)'s number per architecture (asm/unistd.h).
_SYSCALLS = {'x86_64': 324, 'aarch64': 283, 'riscv64': 283, 'armv7l': 389,
             'ppc64le': 365, 's390x': 356}


class GraceUnavailable(OSError):
    """This kernel offers no way to wait for a grace period."""


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _syscall(cmd):
    number = _SYSCALLS.get(platform.machine())
    if number is None:
        raise GraceUnavailable(errno.ENOSYS, 'membarrier: unknown syscall '
                               f'number on {platform.machine()}')
    result = _libc().syscall(number, cmd, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise GraceUnavailable(err, f'membarrier: {os.strerror(err)}')
    return result


def available():
    """Whether wait() works here (MEMBARRIER_CMD_GLOBAL is refused on
    nohz_full kernels, and membarrier may be compiled out)."""
    try:
        return bool(_syscall(MEMBARRIER_CMD_QUERY) & MEMBARRIER_CMD_GLOBAL)
    except GraceUnavailable:
        return False


def wait():
    """Return once every BPF program run that started before is done."""
    _syscall(MEMBARRIER_CMD_GLOBAL)
