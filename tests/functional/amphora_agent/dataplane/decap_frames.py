"""What the tests of the member's tc decapsulation share: the marks that
skip them without root or a build, and the addresses of their frames."""

import contextlib
import os
import secrets
import shutil

import pytest

from amphora_agent.dataplane import decap
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import pins

NEEDS_BPF = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)"),
    pytest.mark.skipif(
        not os.path.exists(os.path.join(pins.object_dir(), decap.OBJECT)),
        reason="BPF objects not built (make build)"),
]

TC_ACT_OK, TC_ACT_SHOT = 0, 2
TUN4, TUN6 = "198.19.1.2", "2001:db8:101::2"     # the member's addresses
SE4, SE6 = "198.18.0.2", "2001:db8:ff::2"       # tunnel sources
VIP4, VIP6 = "198.51.100.10", "2001:db8:100::10"
CLIENT4, CLIENT6 = "203.0.113.7", "2001:db8:c::7"
GRE_V4, GRE_V6 = b"\0\0\x08\x00", b"\0\0\x86\xdd"
KINDS = ["4in4", "6in6", "gre-4in6", "gre-6in4"]
COUNTER = {"4in4": "ipip", "6in6": "ip6ip", "gre-4in6": "gre",
           "gre-6in4": "gre"}


@contextlib.contextmanager
def loaded_member(name):
    """A decap pinned in its own bpffs folder, addresses TUN4 and TUN6,
    with its program open as .prog; every pin removed after."""
    pin_dir = f"/sys/fs/bpf/octavia-dsr-test-{name}-{secrets.token_hex(4)}"
    d = decap.Decap.open(pin_dir)
    try:
        d.set_addresses([TUN4, TUN6])
        with pins.open_program(pin_dir, decap.PROGRAM) as prog:
            d.prog = prog
            yield d
    finally:
        d.destroy()
        shutil.rmtree(pin_dir, ignore_errors=True)


def run(member, frame):
    """(BPF_PROG_TEST_RUN result, counters that moved) of `frame` through
    the loaded program (`member.prog`)."""
    before = member.stats()
    res = libbpf.prog_test_run(member.prog.fd, frame)
    after = member.stats()
    return res, {k: after[k] - before[k] for k in after
                 if after[k] != before[k]}


def tunnelled(kind, inner):
    """(outer family, IP protocol, payload after the outer header) of the
    `inner` packet's bytes sent as `kind`: "4in4", "6in6", "gre-4in6" or
    "gre-6in4"."""
    inner_family = int(kind[-4])
    if kind.startswith("gre"):
        return (int(kind[-1]), 47,
                (GRE_V4 if inner_family == 4 else GRE_V6) + inner)
    return int(kind[-1]), 4 if inner_family == 4 else 41, inner
