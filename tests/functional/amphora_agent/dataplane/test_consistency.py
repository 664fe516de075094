"""Consistent hashing as the real program applies it: identical SEs agree,
member changes move few new flows and no established one.

Flows are resolved with `lookup` (BPF_PROG_TEST_RUN on the loaded program),
so what is checked is the kernel's answer, not a Python model of it; real
traffic checks that the answers match what the wire does.
"""

import ipaddress

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import model
from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.test_dsr_path import member_of
from tools.lab import netns

CLIENT_NET = ipaddress.ip_network('203.0.113.0/24')


def flows(count, first_port):
    """`count` distinct client (address, port) pairs."""
    hosts = list(CLIENT_NET.hosts())[1:200]
    return [(hosts[i % len(hosts)], first_port + i // len(hosts))
            for i in range(count)]


class Resolver:
    """Ask an SE's loaded program where flows go."""

    def __init__(self, dsr, se):
        self.dp = dp_mod.Dataplane.open(dsr.pin_dir(se), create=False)
        self.prog = self.dp.program()

    def __call__(self, key, flow_list):
        result = {}
        for source, port in flow_list:
            answer = dp_mod.lookup(self.dp, model.ListenerKey.parse(key),
                                   source, port, program=self.prog)
            assert 'member' in answer, answer
            result[(source, port)] = answer['member']
        return result

    def close(self):
        self.prog.close()
        self.dp.close()


@pytest.fixture
def resolvers():
    made = []

    def factory(dsr, se):
        r = Resolver(dsr, se)
        made.append(r)
        return r
    yield factory
    for r in made:
        r.close()


def test_two_ses_send_the_same_flows_to_the_same_members(make_dsr,
                                                         resolvers):
    dsr = make_dsr(n_se=2, n_members=3)
    topo = dsr.topo
    members = dsr.member_addrs(4)
    se1, se2 = topo.ses
    dsr.apply(listener(netns.VIP4, members=members), ses=[se1])
    # se2 learns the members in another order and through an intermediate
    # state, so its member slots differ from se1's: only the ring must agree.
    dsr.apply(listener(netns.VIP4, members=members[2:]), ses=[se2])
    dsr.apply(listener(netns.VIP4, members=list(reversed(members))),
              ses=[se2])

    key = f'{netns.VIP4}:80/tcp'
    sample = flows(1000, 20000)
    on_se1 = resolvers(dsr, 'se1')(key, sample)
    on_se2 = resolvers(dsr, 'se2')(key, sample)
    assert on_se1 == on_se2
    spread = {m: list(on_se1.values()).count(m) for m in members}
    assert all(200 < n < 467 for n in spread.values()), spread

    # Real connections through se1 only land where se2's program would have
    # sent them too.
    topo.route_vip(netns.VIP4, via='se1')
    by_addr = dsr.member_by_addr()
    for port in range(43000, 43012):
        served = member_of(topo.http_get(netns.VIP4, source_port=port))
        expected = resolvers(dsr, 'se2')(key, [(topo.client.ipv4, port)])
        assert by_addr[next(iter(expected.values()))] == served


def _moved(before, after):
    return {f for f in before if before[f] != after[f]}


def test_member_changes_move_few_new_flows_and_no_established_one(
        make_dsr, resolvers):
    dsr = make_dsr(n_members=5)
    topo = dsr.topo
    addrs = dsr.member_addrs(4)
    four, newcomer = addrs[:4], addrs[4]
    ports = (80, 81, 82)

    def configure(members):
        # A pool of 8 configured members (some not in the dataplane): its
        # ring keeps one size across these changes (resizes: test_rings).
        dsr.apply(*[listener(netns.VIP4, port=p, members=members,
                             pool_members=8) for p in ports],
                  listener(netns.VIP4, port=5353, protocol='udp',
                           members=members, pool_members=8))

    configure(four)
    ask = resolvers(dsr, 'se1')
    key_a, key_b, key_c = (f'{netns.VIP4}:{p}/tcp' for p in ports)
    established = flows(1000, 10000)
    fresh_add = flows(1000, 30000)
    fresh_del = flows(1000, 40000)

    before_est = ask(key_a, established)  # now in the connection table
    # Listeners with the same members have the same ring: asking key_b
    # tells what a NEW flow got before a change, asking key_c (which never
    # saw these flows) what a new flow gets after it.
    before_add = ask(key_b, fresh_add)

    # A live UDP flow across both changes, on a member that stays.
    for m in topo.members:
        topo.start_udp_echo(m.name)
    probe_flow = (ipaddress.ip_address(topo.client.ipv4), 45000)
    probe_member = ask(f'{netns.VIP4}:5353/udp', [probe_flow])[probe_flow]
    leaver = next(a for a in four if a != probe_member)
    prober = topo.start_udp_probe(netns.VIP4, 5353, duration=20.0,
                                  source_port=45000)

    configure(four + [newcomer])
    assert ask(key_a, established) == before_est, \
        'an established flow moved when a member was added'
    after_add = ask(key_c, fresh_add)
    moved = _moved(before_add, after_add)
    assert 0.12 <= len(moved) / len(fresh_add) <= 0.30, len(moved)
    to_newcomer = sum(1 for f in moved if after_add[f] == newcomer)
    assert to_newcomer >= 0.8 * len(moved)

    before_del = ask(key_b, fresh_del)
    configure([a for a in four + [newcomer] if a != leaver])
    after_est = ask(key_a, established)
    for flow, member in before_est.items():
        if member == leaver:
            assert after_est[flow] != leaver
        else:
            assert after_est[flow] == member, 'a surviving flow moved'
    after_del = ask(key_c, fresh_del)
    moved = _moved(before_del, after_del)
    from_leaver = {f for f in before_del if before_del[f] == leaver}
    assert from_leaver <= moved
    assert len(moved - from_leaver) <= 0.05 * len(fresh_del), \
        len(moved - from_leaver)

    assert prober.poll() is None, 'the probe ended before both changes'
    summary = netns.probe_result(prober)
    assert summary['lost'] == 0, summary
    assert summary['switches'] == 0, summary
