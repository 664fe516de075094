"""The VIP families an SE's BGP sessions carry (routing.py)."""

from dsr_provider.controller import routing


def test_each_established_session_routes_its_family():
    assert routing.families({'peers': {
        '198.18.0.1': 'established', '2001:db8::1': 'active'}}) == {4}
    assert routing.families({'peers': {
        '198.18.0.1': 'idle', '2001:db8::1': 'established'}}) == {6}
    assert routing.families({'peers': {
        '198.18.0.1': 'established', '198.18.0.5': 'connect',
        '2001:db8::1': 'established'}}) == {4, 6}


def test_no_session_established_routes_nothing():
    assert routing.families({'peers': {
        '198.18.0.1': 'not-running', '2001:db8::1': 'idle'}}) == set()


def test_a_family_without_a_peer_or_read_is_not_judged():
    """Only IPv6 sessions: IPv4 VIPs reach the SE another way (static
    routes); a state that could not be read (an ExaBGP call that timed
    out) is not taken for a session down."""
    assert routing.families({'peers': {'2001:db8::1': 'active'}}) == {4}
    assert routing.families({'peers': {
        '198.18.0.1': 'unknown', '2001:db8::1': 'active'}}) == {4}


def test_an_se_without_bgp_peers_is_not_judged():
    for bgp in (None, {}, {'peers': {}}, {'announced': []}, 'junk',
                {'peers': ['198.18.0.1']}):
        assert routing.families(bgp) == routing.ALL


def test_a_peer_that_is_no_address_counts_nothing():
    assert routing.families({'peers': {'router-a': 'established',
                                       '198.18.0.1': 'idle'}}) == {6}


def test_vip_families():
    assert routing.vip_families(['192.0.2.10']) == {4}
    assert routing.vip_families(['192.0.2.10', '2001:db8::10']) == {4, 6}
    assert routing.vip_families([]) == routing.ALL
    assert routing.vip_families(['not an address']) == routing.ALL
