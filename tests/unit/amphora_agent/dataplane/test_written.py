"""Written.held: what the maps hold, counted from the kept image alone
(no BPF: the image is built here)."""

import ipaddress

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from amphora_agent.dataplane import written

LIMITS = dp_mod.Limits(max_listeners=4, ring_size=5261, max_reals=8,
                       ring_slots=4 * 5261)


def image(owners):
    """The reals map's values: slot i in use by listener owners[i] (None:
    free); slot 0 is "no member" and never in use."""
    reals = bytearray()
    for lid in owners:
        real = structs.Real()
        if lid is not None:
            real.flags = structs.REAL_F_IN_USE
            real.listener_id = lid
            real.family = structs.FAMILY_V4
        reals += bytes(real)
    return reals


def key(port):
    return model.ListenerKey(ipaddress.ip_address('192.0.2.1'), port)


def test_held_counts_listeners_member_slots_rings_and_the_fuller_family():
    listeners = {key(80): structs.Listener(id=0, ring_off=0,
                                           ring_size=4001),
                 key(443): structs.Listener(id=1, ring_off=4001,
                                            ring_size=5261),
                 key(53): structs.Listener(id=2, ring_off=0, ring_size=0)}
    acls = {(4, 0): {ipaddress.ip_network('203.0.113.0/24'),
                     ipaddress.ip_network('198.51.100.0/25')},
            (4, 1): {ipaddress.ip_network('192.0.2.0/28')},
            (6, 1): {ipaddress.ip_network('2001:db8:c::/48')}}
    kept = written.Written(
        listeners, image([None, 0, 1, 1, None, 1, None, None]), acls, {},
        {}, LIMITS)
    assert kept.held() == {'max_listeners': 3, 'max_members': 4,
                           'ring_size': 3, 'ring_slots': 4001 + 5261,
                           'max_cidrs': 3}


def test_an_empty_dataplane_holds_nothing():
    kept = written.Written({}, image([None] * 8), {}, {}, {}, LIMITS)
    assert kept.held() == {'max_listeners': 0, 'max_members': 0,
                           'ring_size': 0, 'ring_slots': 0, 'max_cidrs': 0}


def test_slot_0_is_never_a_member():
    """Slot 0 means "no member": even flagged in use it is not counted
    (the limit is max_reals - 1)."""
    kept = written.Written({}, image([0, None]), {}, {}, {}, LIMITS)
    assert kept.held()['max_members'] == 0
