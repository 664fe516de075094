"""The L7 engine's host side stood in for (amphora_agent/l7/host.py: eBPF
decap, VIPs on lo): the VIPs are on the caller's loopback already
(127.0.0.1), for runs of the real engine and HAProxy where the host side is
not what is measured or tested (bench/l7_apply_bench.py,
tests/functional/amphora_agent/l7/test_unprivileged_l7.py)."""

import ipaddress


class LoopbackHost:
    mode = 'loopback'
    tunnel_addresses = {4: ipaddress.ip_address('198.18.7.2')}

    def apply(self, vips, forward=False):
        return []

    def teardown(self):
        return []

    def vips_on_loopback(self, vips):
        return True
