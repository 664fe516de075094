"""netns.default_routes: a gateway that is unreachable for a moment (the
IPv6 prefix route of a link that just came up) is retried, not fatal; one
that stays unreachable is named when the time is up."""

import types

from pyroute2.netlink.exceptions import NetlinkError
import pytest

from tools.lab import netns

HOST = types.SimpleNamespace(gw4='198.18.1.1', gw6='2001:db8:1::1',
                             ns='dsr-test-h1')


class FlakyRoutes:
    """route() refuses the IPv6 gateway `failures` times (EHOSTUNREACH)."""

    def __init__(self, failures):
        self.failures = failures
        self.installed = []

    def route(self, command, dst, gateway):
        if ':' in gateway and self.failures:
            self.failures -= 1
            raise NetlinkError(113, 'No route to host')
        self.installed.append((command, dst, gateway))
        return []


def test_an_unreachable_moment_is_retried():
    ipr = FlakyRoutes(failures=2)
    netns.default_routes(ipr, HOST, timeout=5)
    assert ipr.installed == [('replace', '0.0.0.0/0', HOST.gw4),
                             ('replace', '::/0', HOST.gw6)]


def test_a_gateway_that_stays_unreachable_is_named():
    with pytest.raises(TimeoutError, match=r'via 2001:db8:1::1 in '
                                           r'dsr-test-h1.*No route to host'):
        netns.default_routes(FlakyRoutes(failures=10**6), HOST, timeout=0.3)
