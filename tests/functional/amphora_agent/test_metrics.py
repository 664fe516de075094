"""The agent's Prometheus endpoint, scraped from a live lab agent while
real traffic flows: the counters of the listener and members carrying it
move by what was sent, drops by reason, BGP sessions and routes, health
probes (results per member, latency per pool: 7 series per member),
generation and ring ABI are there."""

import urllib.request

from prometheus_client import parser
import pytest

from amphora_agent.dataplane import maglev
from tools.lab import agent_lab
from tools.lab.agent_lab import listener
from tools.lab.agent_lab import load_balancer
from tools.lab.agent_lab import member
from tools.lab.agent_lab import tcp_monitor
from tools.lab import netns
from tools.lab import ports

VIP4 = netns.VIP4
DL = f'{VIP4}:80/tcp'           # the dataplane listener of l-tcp
REQUESTS = 20


def _free_port():
    return ports.server_port()


class MetricsLab(agent_lab.AgentLab):
    """The agent lab with [metrics] on, one free port per SE."""

    def __init__(self, *args, metrics_options='', **kwargs):
        super().__init__(*args, **kwargs)
        self.metrics_ports = {}
        self.metrics_options = metrics_options

    def config_file(self, se):
        path = super().config_file(se)
        port = self.metrics_ports.setdefault(se, _free_port())
        with open(path, 'a') as f:
            f.write(f'\n[metrics]\nenabled = true\nbind_host = 127.0.0.1\n'
                    f'port = {port}\n{self.metrics_options}')
        return path

    def scrape(self, se):
        return scrape(self.metrics_ports[se])


def scrape(port):
    """{(name, frozenset(labels)): value} of one scrape of the endpoint
    on 127.0.0.1 `port`."""
    url = f'http://127.0.0.1:{port}/metrics'
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parser.text_string_to_metric_families(text)
            for s in family.samples}


@pytest.fixture
def lab(make_topology, request):
    """The lab; parametrized indirectly, lines added to [metrics]."""
    lab = MetricsLab(make_topology(n_se=1, n_members=2),
                     metrics_options=getattr(request, 'param', ''))
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def serve_listener(lab):
    """Listener l-tcp of lb1 on VIP4 with both members, monitored, applied
    and announced; its members ONLINE."""
    members = [member(f'm{m.index}', m.ipv4) for m in lab.topo.members]
    lab.start_agents()
    gen = lab.publish([load_balancer([VIP4], [
        listener('l-tcp', 'TCP', 80, members, monitor=tcp_monitor())])])
    lab.wait_applied(gen)
    lab.wait_route(f'{VIP4}/32', ['se1'])
    netns.wait_for(lambda: set(lab.statuses('se1').values()) == {'ONLINE'},
                   10, 'members ONLINE')
    return gen


def value(samples, name, **labels):
    """The sample named ``name`` whose labels include ``labels``; fails
    unless exactly one matches."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def total(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items()
               if n == name and want <= ls)


def test_scraped_counters_follow_the_traffic(lab):
    gen = serve_listener(lab)

    first = lab.scrape('se1')
    assert value(first, 'octavia_dsr_applied_generation') == gen
    assert value(first, 'octavia_dsr_ring_abi_version') == maglev.ABI_VERSION
    assert value(first, 'octavia_dsr_agent_info', se_group=lab.se_group) == 1
    assert value(first, 'octavia_dsr_bgp_route_announced',
                 prefix=f'{VIP4}/32') == 1
    assert value(first, 'octavia_dsr_capacity_used',
                 resource='listeners') == 1
    # What the applies changed: the one listener added, its ring written.
    assert value(first, 'octavia_dsr_dataplane_changes_total',
                 kind='listeners_added') == 1
    assert value(first, 'octavia_dsr_dataplane_changes_total',
                 kind='rings_written') >= 1
    # From the agent's report of what it holds: one ring sized for a
    # pool of two.
    assert value(first, 'octavia_dsr_capacity_used',
                 resource='largest_pool') == 2
    assert 0 < value(first, 'octavia_dsr_capacity_used',
                     resource='ring_slots') <= value(
        first, 'octavia_dsr_capacity_limit', resource='ring_slots')
    # Sessions are read from ExaBGP every few seconds: poll.
    host = lab.topo.host('se1')
    netns.wait_for(lambda: all(
        value(lab.scrape('se1'), 'octavia_dsr_bgp_peer_up', peer=p) == 1
        for p in (host.gw4, host.gw6)), 15, 'BGP peers up in the metrics')

    before = lab.scrape('se1')
    served = {}
    for port in range(42000, 42000 + REQUESTS):
        body = lab.topo.http_get(VIP4, source_port=port)
        m = body.split('member=')[1].split()[0]
        served[m] = served.get(m, 0) + 1
    # Datagrams to a VIP port no listener has: dropped, by reason.
    lab.topo.run('client', ['python3', '-c', (
        'import socket\n'
        's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
        f'for _ in range(5): s.sendto(b"x", ("{VIP4}", 9999))')])
    netns.wait_for(lambda: value(
        lab.scrape('se1'), 'octavia_dsr_se_dropped_packets_total',
        reason='no_listener') >= value(
            before, 'octavia_dsr_se_dropped_packets_total',
            reason='no_listener') + 5, 10, 'no_listener drops counted')
    after = lab.scrape('se1')

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    lst = dict(lb='lb1', listener='l-tcp', vip=DL)
    packets = delta('octavia_dsr_listener_packets_total', **lst)
    # Every request is a new flow of several client packets (SYN, request,
    # ACKs, FIN) through the SE.
    assert delta('octavia_dsr_listener_new_flows_total', **lst) == REQUESTS
    assert packets >= 3 * REQUESTS
    assert delta('octavia_dsr_listener_bytes_total', **lst) >= 40 * packets
    assert value(after, 'octavia_dsr_listener_active_flows',
                 **lst) >= REQUESTS
    assert delta('octavia_dsr_listener_conn_table_lookups_total',
                 result='miss', **lst) == REQUESTS
    assert delta('octavia_dsr_listener_conn_table_lookups_total',
                 result='hit', **lst) == packets - REQUESTS
    # Far below [dataplane] flood_guard_rate: every new flow remembered.
    assert value(after, 'octavia_dsr_listener_flood_guarded_packets_total',
                 **lst) == 0
    # Per member: what each served, and together the listener's packets.
    for name, count in served.items():
        mem = dict(lb='lb1', listener='l-tcp', member=name, vip=DL)
        assert delta('octavia_dsr_member_new_flows_total', **mem) == count
        assert delta('octavia_dsr_member_packets_total', **mem) >= count
    assert sum(total(after, 'octavia_dsr_member_packets_total', member=m)
               - total(before, 'octavia_dsr_member_packets_total', member=m)
               for m in ('m1', 'm2')) == packets
    # IPv4 flows: in the IPv4 table, each table as large as configured.
    assert value(after, 'octavia_dsr_conn_table_entries',
                 family='4') >= REQUESTS
    assert value(after, 'octavia_dsr_conn_table_size', family='4') == \
        value(after, 'octavia_dsr_conn_table_size', family='6') > 0
    assert value(after, 'octavia_dsr_se_packets_total',
                 action='steered') - value(
        before, 'octavia_dsr_se_packets_total', action='steered') == packets

    # Health probes of both members: results and latency.  A member is
    # ONLINE before its first probe (init_state 'up', as HAProxy's), and a
    # probe's series appears with its first result: wait for both (the
    # requests above, one process each, used to take long enough).
    def probed():
        samples = lab.scrape('se1')
        for member_name in ('m1', 'm2'):
            want = {('member', member_name), ('result', 'ok')}
            if not any(n == 'octavia_dsr_health_probes_total' and want <= ls
                       for n, ls in samples):
                return None
        return samples
    probes = netns.wait_for(probed, 10, 'probes of m1 and m2 in the metrics')
    pool = dict(lb='lb1', pool='pool-l-tcp')
    ok = 0
    for name in ('m1', 'm2'):
        labels = dict(pool, member=name)
        assert value(probes, 'octavia_dsr_member_health', status='ONLINE',
                     **labels) == 1
        ok += value(probes, 'octavia_dsr_health_probes_total', result='ok',
                    **labels)
        # 3 health series per member (the latency histogram is per pool)
        # and 4 traffic series of its one dataplane member.
        assert sum(1 for _n, ls in probes if ('member', name) in ls) == 7
    assert value(probes, 'octavia_dsr_pool_members', status='ONLINE',
                 **pool) == 2
    # Probes of both members in their pool's histogram.
    assert value(probes, 'octavia_dsr_health_probe_duration_seconds_count',
                 **pool) >= ok >= 2
    seconds = value(probes, 'octavia_dsr_health_probe_duration_seconds_sum',
                    **pool)
    assert 0 < seconds < ok      # each probe well under a second
    assert value(after, 'octavia_dsr_agent_error') == 0
    assert value(after, 'octavia_dsr_helper_up', helper='bgp') == 1


@pytest.mark.parametrize('lab', ['member_series = false\n'],
                         indirect=True)
def test_member_series_off(lab):
    serve_listener(lab)
    for port in range(42000, 42005):
        lab.topo.http_get(VIP4, source_port=port)
    pool = dict(lb='lb1', pool='pool-l-tcp')

    def probed():
        samples = lab.scrape('se1')
        return samples if total(
            samples, 'octavia_dsr_health_probe_duration_seconds_count',
            **pool) >= 2 else None
    samples = netns.wait_for(probed, 10, 'probes in the pool histogram')
    assert [n for n, ls in samples if any(k == 'member' for k, _ in ls)] \
        == []
    assert value(samples, 'octavia_dsr_listener_new_flows_total',
                 lb='lb1', listener='l-tcp', vip=DL) == 5
    assert total(samples, 'octavia_dsr_pool_members', **pool) == 2
