"""Only the SEs' tunnel packets are decapsulated, once the member is told
their tunnel sources (``Decap.set_sources``: ``dsr-member setup
--se-source``, ``dsrctl decap attach --source``).

Anyone who can reach a member's tunnel address could otherwise hand it an
inner packet with any client source, past the SEs' ``allowed_cidrs`` and
connection limits.  Frames run through the loaded ``dsr_decap`` program
with BPF_PROG_TEST_RUN; 4in4, 6in6 and GRE (4in6, 6in4).  Also: an
earlier release's pins (a counter map without ``drop_source``) are
replaced at load, the addresses kept.
"""

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from amphora_agent.dataplane import decap
from amphora_agent.dataplane import pins
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import decap_frames
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT4
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT6
from tests.functional.amphora_agent.dataplane.decap_frames import COUNTER
from tests.functional.amphora_agent.dataplane.decap_frames import KINDS
from tests.functional.amphora_agent.dataplane.decap_frames import NEEDS_BPF
from tests.functional.amphora_agent.dataplane.decap_frames import SE4
from tests.functional.amphora_agent.dataplane.decap_frames import SE6
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_OK
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_SHOT
from tests.functional.amphora_agent.dataplane.decap_frames import TUN4
from tests.functional.amphora_agent.dataplane.decap_frames import TUN6
from tests.functional.amphora_agent.dataplane.decap_frames import VIP4
from tests.functional.amphora_agent.dataplane.decap_frames import VIP6

pytestmark = NEEDS_BPF

OTHER4, OTHER6 = "198.18.0.99", "2001:db8:ff::99"   # not an SE


@pytest.fixture
def pin_dir():
    path = f"/sys/fs/bpf/octavia-dsr-test-decap-src-{secrets.token_hex(4)}"
    yield path
    # Without loading anything: also pins a failed test left half made.
    decap.remove_pins(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def member(pin_dir):
    with decap.Decap.open(pin_dir) as d:
        d.set_addresses([TUN4, TUN6])
        with pins.open_program(pin_dir, decap.PROGRAM) as prog:
            d.prog = prog
            yield d


def tunnel(kind, source):
    """A frame as the member receives it, from outer `source` ("se" or
    "other")."""
    if kind[-4] == "4":
        pkt = IP(src=CLIENT4, dst=VIP4)
    else:
        pkt = IPv6(src=CLIENT6, dst=VIP6)
    outer_family, proto, payload = decap_frames.tunnelled(
        kind, bytes(pkt / TCP(sport=40001, dport=80, flags="S")))
    if outer_family == 4:
        src = SE4 if source == "se" else OTHER4
        outer = Ether(type=0x0800) / IP(src=src, dst=TUN4, proto=proto)
    else:
        src = SE6 if source == "se" else OTHER6
        outer = Ether(type=0x86DD) / IPv6(src=src, dst=TUN6, nh=proto)
    return bytes(outer / Raw(payload))


def run(member, frame):
    res, delta = decap_frames.run(member, frame)
    return res.retval, delta


@pytest.mark.parametrize("kind", KINDS)
def test_without_sources_any_source_is_decapsulated(member, kind):
    """As before this feature, and as a kernel tunnel device does."""
    assert member.sources() == []
    assert run(member, tunnel(kind, "other")) == (
        TC_ACT_OK, {COUNTER[kind]: 1})


@pytest.mark.parametrize("kind", KINDS)
def test_with_sources_only_the_ses_packets_are_decapsulated(member, kind):
    member.set_sources([SE4, SE6])
    assert member.sources() == [SE4, SE6]
    assert run(member, tunnel(kind, "se")) == (TC_ACT_OK, {COUNTER[kind]: 1})
    assert run(member, tunnel(kind, "other")) == (
        TC_ACT_SHOT, {"drop_source": 1})


def test_addresses_added_later_are_restricted_too(member):
    member.set_sources([SE4])
    member.set_addresses([TUN6])
    member.set_addresses([TUN4, TUN6])
    assert run(member, tunnel("4in4", "other")) == (
        TC_ACT_SHOT, {"drop_source": 1})
    # IPv6 packets: no IPv6 SE source listed, so none is accepted.
    assert run(member, tunnel("6in6", "se")) == (
        TC_ACT_SHOT, {"drop_source": 1})


def test_the_last_source_removed_accepts_any_again(member):
    member.set_sources([SE4])
    member.set_sources([])
    assert member.sources() == []
    assert run(member, tunnel("4in4", "other")) == (TC_ACT_OK, {"ipip": 1})


def test_other_traffic_is_not_touched(member):
    """Not a tunnel packet, or not to a tunnel address: passed on, not
    counted, whatever its source."""
    member.set_sources([SE4])
    plain = bytes(Ether(type=0x0800) / IP(src=OTHER4, dst=TUN4)
                  / TCP(dport=22))
    assert run(member, plain) == (TC_ACT_OK, {})
    elsewhere = bytes(Ether(type=0x0800) / IP(src=OTHER4, dst=VIP4, proto=4)
                      / Raw(bytes(IP(src=CLIENT4, dst=VIP4) / TCP())))
    assert run(member, elsewhere) == (TC_ACT_OK, {})


def test_an_earlier_releases_pins_are_upgraded(pin_dir):
    """The counter map it pinned has one counter fewer: libbpf cannot reuse
    it, so it is replaced (its counts restart); the addresses stay."""
    with decap.Decap.open(pin_dir) as d:
        d.set_addresses([TUN4])
    # What an earlier release leaves: the addresses and its counters, no
    # source map (pinned() is then false and open() loads again).
    os.unlink(os.path.join(pin_dir, "decap_sources"))
    os.unlink(os.path.join(pin_dir, "decap_stats"))
    subprocess.run(
        ["bpftool", "map", "create", os.path.join(pin_dir, "decap_stats"),
         "type", "percpu_array", "key", "4", "value", "8", "entries",
         str(len(structs.DECAP_STATS) - 1), "name", "decap_stats"],
        check=True)
    with decap.Decap.open(pin_dir) as d:
        assert d.addresses() == [TUN4]
        assert "drop_source" in d.stats()
        d.set_sources([SE4])
        with pins.open_program(pin_dir, decap.PROGRAM) as prog:
            d.prog = prog
            assert run(d, tunnel("4in4", "other")) == (
                TC_ACT_SHOT, {"drop_source": 1})


def test_a_source_given_by_two_setups_stays_until_both_take_it(member):
    """Setups sharing the pins count the sources they give: one setup
    taking its SE back leaves the other's trust (and packets) in place."""
    member.set_addresses([])
    member.set_addresses([TUN4], restricted=True)
    member.give_sources([SE4])
    member.give_sources([SE4, SE6])
    assert member.source_counts() == {SE4: 2, SE6: 1}
    member.take_sources([SE4, SE6])
    assert member.source_counts() == {SE4: 1}
    assert run(member, tunnel("4in4", "se")) == (TC_ACT_OK, {"ipip": 1})
    member.take_sources([SE4])
    member.take_sources([SE4])  # taken again: nothing left to take
    assert member.source_counts() == {}


def test_set_sources_is_exactly_these_and_keeps_counts(member):
    """dsrctl's "exactly these": the kept ones keep their count (setups
    still give them), the others go whoever gave them."""
    member.give_sources([SE4])
    member.give_sources([SE4, OTHER4])
    member.set_sources([SE4, SE6])
    assert member.source_counts() == {SE4: 2, SE6: 1}


def test_an_address_two_setups_give_stays_until_both_take_it(member):
    """Setups count the tunnel addresses they give, as the sources: the
    first one out leaves the other's address decapsulated."""
    member.set_addresses([])
    assert member.give_addresses([TUN4], restricted=False) == [TUN4]
    assert member.give_addresses([TUN4, TUN6], restricted=False) == [TUN6]
    assert member.take_addresses([TUN4, TUN6], restricted=False) == [TUN6]
    assert member.addresses() == [TUN4]
    assert run(member, tunnel("4in4", "other")) == (TC_ACT_OK, {"ipip": 1})
    assert member.take_addresses([TUN4], restricted=False) == [TUN4]
    assert member.addresses() == []


def test_a_shared_address_is_restricted_only_if_every_setup_asks(member):
    """Never drop a setup's packets for another setup's source list: the
    address takes any source while one of its setups asked for any."""
    member.set_addresses([])
    member.give_sources([SE4])
    member.give_addresses([TUN4], restricted=True)
    assert member.restricted() == [TUN4]
    member.give_addresses([TUN4], restricted=False)
    assert member.restricted() == []
    assert run(member, tunnel("4in4", "other")) == (TC_ACT_OK, {"ipip": 1})
    member.regive_addresses([TUN4], restricted=True)   # it gives sources now
    assert member.restricted() == [TUN4]
    member.regive_addresses([TUN4], restricted=False)
    member.take_addresses([TUN4], restricted=False)    # the open one leaves
    assert member.restricted() == [TUN4]
    assert run(member, tunnel("4in4", "other")) == (
        TC_ACT_SHOT, {"drop_source": 1})


def test_an_address_without_a_count_is_one_setup(member):
    """What dsrctl or an earlier release wrote (flags only) counts as one
    setup, open unless restricted: taken once, it is gone."""
    member.set_addresses([])
    member.set_addresses([TUN4], restricted=True)  # flags only, restricted
    member.give_addresses([TUN4], restricted=True)
    assert member.take_addresses([TUN4], restricted=True) == []
    assert member.restricted() == [TUN4]
    assert member.take_addresses([TUN4], restricted=True) == [TUN4]


def test_counts_never_leave_an_address_open_by_drift(member):
    """Taken back in the wrong mode (an open setup's open count not
    lowered), the open count is still never more than the setups: the
    last setup, switched to restricted, restricts the address."""
    # TUN4 as dsrctl wrote it (flags only, open): one open setup.
    member.give_addresses([TUN4], restricted=False)    # 2 setups, 2 open
    member.take_addresses([TUN4], restricted=True)     # 1 setup, not 2 open
    assert member.restricted() == []
    member.regive_addresses([TUN4], restricted=True)
    assert member.restricted() == [TUN4]


def test_too_many_setups_for_one_address_are_refused(member):
    member.set_addresses([])
    for _ in range(decap._COUNT_MAX):
        member.give_addresses([TUN4], restricted=True)
    with pytest.raises(decap.DecapError, match="more than 4095 setups"):
        member.give_addresses([TUN4], restricted=True)
    assert member.restricted() == [TUN4]


def _has_open(pid, path):
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(os.path.join(fds, fd)) == path
                   for fd in os.listdir(fds))
    except FileNotFoundError:
        return False


def test_the_lock_is_one_holder_at_a_time(pin_dir, tmp_path):
    """Two processes (and two threads) changing one pin folder take
    turns; another pin folder's lock is another lock."""
    order = []
    held = threading.Event()
    release = threading.Event()

    def holder():
        with decap.locked(pin_dir, lock_dir=str(tmp_path)):
            order.append("first in")
            held.set()
            release.wait(30)
            order.append("first out")

    def second_thread():
        with decap.locked(pin_dir, lock_dir=str(tmp_path)):
            order.append("second thread")

    thread = threading.Thread(target=holder)
    thread.start()
    second = proc = None
    try:
        assert held.wait(10)
        [lock_file] = [str(p) for p in tmp_path.iterdir()]
        with decap.locked(pin_dir + "-other", lock_dir=str(tmp_path)):
            order.append("other folder")
        second = threading.Thread(target=second_thread)
        second.start()
        code = ("from amphora_agent.dataplane import decap\n"
                f"with decap.locked({pin_dir!r}, lock_dir={str(tmp_path)!r}):"
                "\n    print('in', flush=True)\n")
        proc = subprocess.Popen([sys.executable, "-c", code],
                                stdout=subprocess.PIPE, text=True)
        # Poll until the process is trying (it has the lock file open);
        # it must not get through while the thread holds the lock.
        deadline = time.monotonic() + 30
        while not _has_open(proc.pid, lock_file):
            assert proc.poll() is None, "it got through a held lock"
            assert time.monotonic() < deadline, "it never tried the lock"
            time.sleep(0.01)
        # Trying, and still not through: nothing printed for a while (a
        # process that got in would print within milliseconds).
        readable, _, _ = select.select([proc.stdout], [], [], 0.5)
        assert not readable and proc.poll() is None, \
            "it got through a held lock"
        release.set()
        thread.join(10)
        second.join(30)
        assert proc.communicate(timeout=30)[0] == "in\n"
    finally:
        release.set()
        thread.join(10)
        if second is not None:
            second.join(30)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert order == ["first in", "other folder", "first out",
                     "second thread"]


def test_a_reader_without_the_lock_never_loads(pin_dir, monkeypatch):
    """Decap.open(create=False) (dsrctl decap show/stats take no lock)
    fails NotPinned on missing pins instead of loading them, also when a
    teardown removes them between its check and its open."""
    with pytest.raises(decap.NotPinned):
        decap.Decap.open(pin_dir, create=False)
    assert not decap.present(pin_dir)
    with decap.Decap.open(pin_dir) as d:
        d.set_addresses([TUN4])
    with decap.Decap.open(pin_dir, create=False) as d:
        assert [str(a) for a in d.addresses()] == [TUN4]
    # The pins go between the check and the open: the check said pinned.
    decap.remove_pins(pin_dir)
    monkeypatch.setattr(decap, "pinned", lambda _pin_dir: True)
    with pytest.raises(decap.NotPinned, match="went away"):
        decap.Decap.open(pin_dir, create=False)
    assert not decap.present(pin_dir)


@pytest.mark.parametrize("action", ["show", "stats"])
def test_dsrctl_decap_reads_change_nothing(pin_dir, action):
    """dsrctl decap show/stats with nothing pinned: a clear error (exit 2)
    and still nothing pinned; once loaded, they read it."""
    argv = [sys.executable, "-m", "amphora_agent.cmd.dsrctl",
            "--decap-pin-dir", pin_dir, "decap", action, "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert f"no decap is pinned in {pin_dir}" in out.stderr, out.stderr
    assert not decap.present(pin_dir)
    with decap.Decap.open(pin_dir) as d:
        d.set_addresses([TUN4])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    if action == "show":
        assert json.loads(out.stdout)["addresses"] == [TUN4]
