"""The order in which Dataplane.apply writes VIP addresses and listeners.

The SE program passes to the stack a packet whose destination is neither
a listener's nor a known VIP address's, so a new VIP's address must be in
vip_addrs before its first listener (else, for one syscall, packets to it
on another port are passed), and a leaving VIP's address must go only
after its last listener.  The maps' writes are recorded in order.

These load the real SE object (maps only, nothing attached).
"""

import ipaddress
import secrets
import shutil

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from tests.unit.amphora_agent.dataplane import se_object
from tests.unit.amphora_agent.dataplane import test_delta_apply as delta

pytestmark = se_object.NEEDS_SE_OBJECT

OLD_VIP, NEW_VIP = '192.0.2.1', '192.0.2.2'
# A listener table that a few listeners fill (their rings fit).
LIMITS = dp_mod.Limits(max_listeners=3, ring_size=5261, max_reals=8,
                       max_nexthops=4, max_cidrs=4, ring_slots=4 * 5261)


class Recorder:
    """A map whose updates and deletions are logged (name, op, key)."""

    def __init__(self, name, inner, log):
        self._name, self._inner, self._log = name, inner, log

    def update(self, key, value, *args, **kwargs):
        self._log.append((self._name, 'update', bytes(key)))
        return self._inner.update(key, value, *args, **kwargs)

    def delete(self, key, *args, **kwargs):
        self._log.append((self._name, 'delete', bytes(key)))
        return self._inner.delete(key, *args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


@pytest.fixture
def dp():
    root = f'/sys/fs/bpf/octavia-dsr-test-{secrets.token_hex(4)}'
    dp = dp_mod.Dataplane.open(root, limits=LIMITS)
    saved = dict(dp.maps)
    try:
        # Inside the try: a set-up that fails leaves no pins either.
        dp._resolver = delta.FakeResolver()
        dp.log = []
        for name in (dp_mod.LISTENER_MAP, 'vip_addrs'):
            dp.maps[name] = Recorder(name, saved[name], dp.log)
        yield dp
    finally:
        dp.maps.update(saved)
        dp.destroy()
        shutil.rmtree(root, ignore_errors=True)


def desired(*keys):
    st = model.DesiredState(
        tunnel_source4=ipaddress.ip_address('198.18.0.1'))
    for vip, port in keys:
        key = model.ListenerKey(ipaddress.ip_address(vip), port, 'tcp')
        member = ipaddress.ip_address('198.19.0.1')
        st.listeners[key] = model.ListenerSpec(
            key, members={member: model.Member(member)})
    return st


def listener_key(vip, port):
    return bytes(dp_mod._vip_key(model.ListenerKey(
        ipaddress.ip_address(vip), port, 'tcp')))


def vip_key(vip):
    return bytes(dp_mod._vip_addr_key(ipaddress.ip_address(vip)))


def position(dp, name, op, key):
    return dp.log.index((name, op, key))


@pytest.mark.parametrize('full', [False, True])
def test_a_new_vip_is_known_before_its_listener(dp, full):
    """Also when the listener table is full, so the leaving listener
    goes before the new one (its VIP address after it)."""
    ports = range(80, 80 + (LIMITS.max_listeners if full else 1))
    dp.apply(desired(*[(OLD_VIP, p) for p in ports]))
    del dp.log[:]
    dp.apply(desired(*[(OLD_VIP, p) for p in ports[1:]], (NEW_VIP, 443)))
    assert position(dp, 'vip_addrs', 'update', vip_key(NEW_VIP)) < \
        position(dp, dp_mod.LISTENER_MAP, 'update', listener_key(NEW_VIP, 443))
    live = dp.read_state()
    assert {str(k.vip) for k in live.listeners} == (
        {OLD_VIP, NEW_VIP} if full else {NEW_VIP})
    vips = {str(structs.unpack_addr(structs.VipAddrKey.from_bytes(k).addr,
                                    4)) for k in dp.maps['vip_addrs'].keys()}
    assert vips == {str(k.vip) for k in live.listeners}


def test_a_leaving_vip_is_forgotten_after_its_last_listener(dp):
    dp.apply(desired((OLD_VIP, 80), (NEW_VIP, 443)))
    del dp.log[:]
    dp.apply(desired((OLD_VIP, 80)))
    assert position(dp, dp_mod.LISTENER_MAP, 'delete',
                    listener_key(NEW_VIP, 443)) \
        < position(dp, 'vip_addrs', 'delete', vip_key(NEW_VIP))
