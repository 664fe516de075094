"""ExaBGP configuration generation and the idempotent route planning."""

import base64
import os
import subprocess
import sys

import pytest

from amphora_agent.bgp import exabgp_config as xc
from amphora_agent.bgp.exabgp_config import ConfigError
from amphora_agent.bgp.exabgp_config import Peer
from amphora_agent.bgp.exabgp_config import SpeakerConfig

API_ARGV = [sys.executable, '-S', '/opt/x/exabgp_api.py', '/run/x/api.sock']


def make_config(**over):
    kw = dict(local_asn=65001, router_id='198.18.1.2',
              peers=[Peer('198.18.1.1', 65000),
                     Peer('2001:db8:1:1::1', 65000)],
              nexthop4='198.18.1.2', nexthop6='2001:db8:1:1::2')
    kw.update(over)
    return SpeakerConfig(**kw)


def neighbor_block(text, address):
    start = text.index(f'neighbor {address} {{')
    return text[start:text.index('\n}\n', start) + 3]


# -- validation ---------------------------------------------------------


def test_peer_normalises_and_validates():
    p = Peer('2001:DB8:0:0::1', '65000')
    assert p.address == '2001:db8::1' and p.asn == 65000 and p.family == 6
    assert p.hold_time == xc.DEFAULT_HOLD_TIME
    for bad in (dict(address='x', asn=1), dict(address='10.0.0.1', asn=0),
                dict(address='10.0.0.1', asn=2 ** 32),
                dict(address='10.0.0.1', asn=1, hold_time=2),
                dict(address='10.0.0.1', asn=1, password=''),
                dict(address='10.0.0.1', asn=1, password='x' * 81),
                dict(address='10.0.0.1', asn=1, local_address='::1')):
        with pytest.raises(ConfigError):
            Peer(**bad)
    assert Peer('10.0.0.1', 1, hold_time=0).hold_time == 0


def test_peer_repr_hides_password():
    assert 'hunter2' not in repr(Peer('10.0.0.1', 1, password='hunter2'))


def test_parse_peer():
    p = xc.parse_peer('2001:db8::1 65000 hold_time=30 password=a=b',
                      default_password='dflt', default_hold_time=12)
    assert (p.address, p.asn, p.hold_time, p.password) == (
        '2001:db8::1', 65000, 30, 'a=b')
    p = xc.parse_peer('198.18.1.1 65000', default_password='dflt',
                      default_hold_time=12)
    assert (p.hold_time, p.password) == (12, 'dflt')
    with pytest.raises(ConfigError):
        xc.parse_peer('198.18.1.1')
    with pytest.raises(ConfigError):
        xc.parse_peer('198.18.1.1 65000 color=blue')


def test_speaker_config_validation():
    c = make_config()
    assert [p.family for p in c.peers] == [4, 6]
    assert c.nexthop(4) == '198.18.1.2' and c.nexthop(6) == '2001:db8:1:1::2'
    with pytest.raises(ConfigError, match='no IPv6 next hop'):
        make_config(nexthop6=None)
    with pytest.raises(ConfigError, match='twice'):
        make_config(peers=[Peer('198.18.1.1', 1), Peer('198.18.1.1', 2)])
    with pytest.raises(ConfigError, match='IPv4'):
        make_config(router_id='2001:db8::1')
    with pytest.raises(ConfigError, match='not IPv6'):
        make_config(nexthop6='198.18.1.2')
    with pytest.raises(ConfigError, match='at least one'):
        make_config(peers=[])
    # Peers given as dicts are accepted.
    c = make_config(peers=[{'address': '198.18.1.1', 'asn': 65000}],
                    nexthop6=None)
    assert c.peers == (Peer('198.18.1.1', 65000),)


def test_host_prefix():
    assert str(xc.host_prefix('192.0.2.10')) == '192.0.2.10/32'
    assert str(xc.host_prefix('2001:db8:f::10/128')) == '2001:db8:f::10/128'
    for bad in ('192.0.2.0/24', '2001:db8::/64', 'nope', '192.0.2.10/31'):
        with pytest.raises(ValueError):
            xc.host_prefix(bad)


# -- rendering ----------------------------------------------------------


def test_render_config_v4_and_native_v6_sessions():
    text = xc.render_config(make_config(), API_ARGV)
    assert f'process {xc.API_PROCESS} {{' in text
    assert f'run {" ".join(API_ARGV)};' in text
    assert 'encoder text;' in text
    v4 = neighbor_block(text, '198.18.1.1')
    assert 'local-address 198.18.1.2;' in v4
    assert 'router-id 198.18.1.2;' in v4
    assert 'local-as 65001;' in v4 and 'peer-as 65000;' in v4
    assert 'ipv4 unicast;' in v4 and 'ipv6' not in v4
    assert f'processes [ {xc.API_PROCESS} ];' in v4
    assert 'hold-time 9;' in v4
    v6 = neighbor_block(text, '2001:db8:1:1::1')
    assert 'local-address 2001:db8:1:1::2;' in v6
    assert 'ipv6 unicast;' in v6 and 'ipv4' not in v6
    # v6 sessions still carry an IPv4 router id.
    assert 'router-id 198.18.1.2;' in v6
    # Never graceful restart; no static routes in the file; no MD5 unless
    # asked.
    assert 'graceful' not in text
    assert 'route ' not in text and 'md5' not in text


def test_render_config_md5_base64_and_local_address_override():
    pw = 'p a"s;s}'
    c = make_config(peers=[Peer('198.18.1.1', 65000, password=pw,
                                hold_time=30, local_address='198.18.1.9')],
                    nexthop6=None)
    v4 = neighbor_block(xc.render_config(c, API_ARGV), '198.18.1.1')
    assert 'md5-base64 true;' in v4
    assert f'md5-password {base64.b64encode(pw.encode()).decode()};' in v4
    assert pw not in v4
    assert 'local-address 198.18.1.9;' in v4 and 'hold-time 30;' in v4


def test_render_config_refuses_unsafe_paths():
    with pytest.raises(ConfigError):
        xc.render_config(make_config(), [sys.executable, '/a b/x.py'])
    with pytest.raises(ConfigError):
        xc.render_config(make_config(), ['relative/python', '/x.py'])


def test_render_env():
    env = xc.render_env('DEBUG', user='root')
    assert '[exabgp.api]' in env and 'ack = true' in env
    assert 'cli = false' in env and 'daemonize = false' in env
    assert 'user = root' in env and 'level = DEBUG' in env
    assert 'destination = stdout' in env


def test_digest_tracks_every_input():
    conf = xc.render_config(make_config(), API_ARGV)
    env = xc.render_env(user='root')
    base = xc.digest(conf, env, ['exabgp', 'x.conf'])
    assert base == xc.digest(conf, env, ['exabgp', 'x.conf'])
    other_peer = xc.render_config(
        make_config(peers=[Peer('198.18.1.1', 65002),
                           Peer('2001:db8:1:1::1', 65000)]), API_ARGV)
    assert xc.digest(other_peer, env, ['exabgp', 'x.conf']) != base
    assert xc.digest(conf, xc.render_env('DEBUG', user='root'),
                     ['exabgp', 'x.conf']) != base
    assert xc.digest(conf, env, ['exabgp2', 'x.conf']) != base


def _exabgp(tmp_path, *args):
    """ExaBGP itself, with the environment file we render and none of the
    caller's exabgp.* variables."""
    envf = tmp_path / 'exabgp.env'
    envf.write_text(xc.render_env())
    env = {k: v for k, v in os.environ.items()
           if not k.lower().startswith('exabgp')}
    env['EXABGP_ENVFILE'] = str(envf)
    exabgp = os.path.join(os.path.dirname(sys.executable), 'exabgp')
    return subprocess.run([exabgp, *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.skipif(not os.access(os.path.join(os.path.dirname(
    sys.executable), 'exabgp'), os.X_OK), reason='exabgp not installed')
def test_exabgp_itself_accepts_the_config(tmp_path):
    """ExaBGP's own parser (``exabgp validate``) loads what we render."""
    c = make_config(peers=[Peer('198.18.1.1', 65000, password='a b"c'),
                           Peer('2001:db8:1:1::1', 4200000000)])
    helper = tmp_path / 'api.py'
    helper.write_text('')
    conf = tmp_path / 'exabgp.conf'
    conf.write_text(xc.render_config(
        c, [sys.executable, '-S', str(helper), str(tmp_path / 's')]))
    proc = _exabgp(tmp_path, 'validate', '-n', str(conf))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not os.access(os.path.join(os.path.dirname(
    sys.executable), 'exabgp'), os.X_OK), reason='exabgp not installed')
def test_exabgp_itself_reads_the_loop_pace(tmp_path):
    """ExaBGP's own environment parser (``exabgp env --diff``: what
    differs from its defaults) takes the reactor speed we render."""
    proc = _exabgp(tmp_path, 'env', '--diff')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'[exabgp.reactor]\nspeed = {xc.REACTOR_SPEED}' in proc.stdout
    assert float(xc.REACTOR_SPEED) > 1.0


# -- API commands and RIB parsing ----------------------------------------


def test_route_command():
    p4, p6 = Peer('198.18.1.1', 1), Peer('2001:db8:1:1::1', 1)
    assert xc.route_command('announce', p4, '192.0.2.10', '198.18.1.2') == (
        'neighbor 198.18.1.1 announce route 192.0.2.10/32 '
        'next-hop 198.18.1.2')
    assert xc.route_command('withdraw', p6, '2001:db8:f::10') == (
        'neighbor 2001:db8:1:1::1 withdraw route 2001:db8:f::10/128')
    with pytest.raises(ValueError):
        xc.route_command('announce', p4, '192.0.2.10', '2001:db8::1')
    with pytest.raises(ValueError):
        xc.route_command('announce', p4, '192.0.2.10')
    with pytest.raises(ValueError):
        xc.route_command('flap', p4, '192.0.2.10')


def test_parse_adj_rib_out():
    lines = [
        '198.18.1.1 ipv4 unicast 192.0.2.10/32 next-hop 198.18.1.2',
        '198.18.1.1 ipv4 unicast 192.0.2.11/32 next-hop 198.18.1.2 '
        'origin igp',
        '2001:db8:1:1::1 ipv6 unicast 2001:db8:f::10/128 next-hop '
        '2001:db8:1:1::2',
        '198.18.1.1 ipv4 flow destination 192.0.2.0/24',   # other family
        'garbage',
    ]
    assert xc.parse_adj_rib_out(lines) == {
        '198.18.1.1': {'192.0.2.10/32': '198.18.1.2',
                       '192.0.2.11/32': '198.18.1.2'},
        '2001:db8:1:1::1': {'2001:db8:f::10/128': '2001:db8:1:1::2'},
    }
    assert xc.parse_adj_rib_out([]) == {}


# -- idempotent set logic -------------------------------------------------


def _apply(rib, announce, withdraw):
    rib = {k: dict(v) for k, v in rib.items()}
    for peer, prefix in withdraw:
        rib.setdefault(peer.address, {}).pop(prefix, None)
    for peer, prefix, nh in announce:
        rib.setdefault(peer.address, {})[prefix] = nh
    return rib


def test_plan_from_empty_announces_each_vip_to_its_family():
    c = make_config()
    ann, wd, unroutable = xc.plan_changes(
        c, {'192.0.2.10', '2001:db8:f::10/128'}, {})
    assert [(p.address, x, nh) for p, x, nh in ann] == [
        ('198.18.1.1', '192.0.2.10/32', '198.18.1.2'),
        ('2001:db8:1:1::1', '2001:db8:f::10/128', '2001:db8:1:1::2')]
    assert wd == [] and unroutable == set()


def test_plan_is_idempotent():
    c = make_config(peers=[Peer('198.18.1.1', 65000),
                           Peer('198.18.9.1', 65000),
                           Peer('2001:db8:1:1::1', 65000)])
    want = {'192.0.2.10/32', '192.0.2.11/32', '2001:db8:f::10/128'}
    rib = {}
    ann, wd, _ = xc.plan_changes(c, want, rib)
    assert len(ann) == 5 and wd == []      # two v4 peers x 2 + one v6
    rib = _apply(rib, ann, wd)
    assert xc.plan_changes(c, want, rib) == ([], [], set())


def test_plan_withdraws_extra_and_fixes_partial_state():
    c = make_config(peers=[Peer('198.18.1.1', 65000),
                           Peer('198.18.9.1', 65000),
                           Peer('2001:db8:1:1::1', 65000)])
    rib = {
        # 192.0.2.10 on one v4 peer only, an extra v4 VIP, a v6 VIP with a
        # stale next hop, and an unknown peer (ignored: not configured).
        '198.18.1.1': {'192.0.2.10/32': '198.18.1.2',
                       '192.0.2.99/32': '198.18.1.2'},
        '2001:db8:1:1::1': {'2001:db8:f::10/128': '2001:db8:1:1::99'},
        '203.0.113.1': {'192.0.2.50/32': '1.1.1.1'},
    }
    want = {'192.0.2.10/32', '2001:db8:f::10/128'}
    ann, wd, _ = xc.plan_changes(c, want, rib)
    assert sorted((p.address, x) for p, x, _ in ann) == [
        ('198.18.9.1', '192.0.2.10/32'),
        ('2001:db8:1:1::1', '2001:db8:f::10/128')]
    assert [(p.address, x) for p, x in wd] == [('198.18.1.1',
                                                '192.0.2.99/32')]
    rib = _apply(rib, ann, wd)
    assert xc.plan_changes(c, want, rib) == ([], [], set())
    # And back to nothing.
    ann, wd, _ = xc.plan_changes(c, set(), rib)
    assert ann == [] and len(wd) == 3
    assert xc.plan_changes(c, set(), _apply(rib, ann, wd)) == (
        [], [], set())


def test_plan_reports_vips_no_peer_can_carry():
    c = make_config(peers=[Peer('198.18.1.1', 65000)], nexthop6=None)
    ann, wd, unroutable = xc.plan_changes(
        c, {'192.0.2.10', '2001:db8:f::10'}, {})
    assert [x for _, x, _ in ann] == ['192.0.2.10/32']
    assert unroutable == {'2001:db8:f::10/128'}


def test_plan_refuses_non_host_prefixes():
    with pytest.raises(ValueError):
        xc.plan_changes(make_config(), {'192.0.2.0/24'}, {})


# -- options ---------------------------------------------------------------


class Opts:
    local_asn = 65001
    router_id = None
    peers = ['198.18.1.1 65000', '2001:db8:1:1::1 65000 hold_time=30']
    md5_password = 'pw'
    hold_time = 12
    nexthop_ipv4 = None
    nexthop_ipv6 = None


def test_config_from_options_defaults_to_the_se_addresses():
    c = xc.config_from_options(Opts, '198.18.1.2', '2001:db8:1:1::2')
    assert c.router_id == '198.18.1.2' == c.nexthop4
    assert c.nexthop6 == '2001:db8:1:1::2'
    assert [(p.address, p.hold_time, p.password) for p in c.peers] == [
        ('198.18.1.1', 12, 'pw'), ('2001:db8:1:1::1', 30, 'pw')]


def test_config_from_options_overrides():
    class Overrides(Opts):
        router_id = '10.9.9.9'
        nexthop_ipv4 = '198.18.1.7'
        peers = ['198.18.1.1 65000']
        md5_password = None
    c = xc.config_from_options(Overrides, '198.18.1.2', None)
    assert c.router_id == '10.9.9.9' and c.nexthop4 == '198.18.1.7'
    assert c.peers[0].password is None
    with pytest.raises(ConfigError):
        xc.config_from_options(Opts, None, '2001:db8:1:1::2')   # no rid

    class NoPeers(Opts):
        peers = []
    with pytest.raises(ConfigError):
        xc.config_from_options(NoPeers, '198.18.1.2', '2001:db8:1:1::2')


def test_render_env_refuses_unknown_log_level():
    with pytest.raises(ConfigError):
        xc.render_env('CHATTY', user='root')
