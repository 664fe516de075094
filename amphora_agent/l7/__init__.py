"""The L7 (tier-2) service engine: HAProxy configured from the L7 snapshot
(dsr_wire/l7.py), behind the L4 DSR tier.

render   -- L7 document -> HAProxy configuration, through Octavia's own
            combined-listeners templater, plus the DSR post-processing
haproxy  -- one master-worker HAProxy per load balancer: validate, start,
            hitless reload, stop
stats    -- stats socket -> member status and listener counters, as
            Octavia's amphora reports them
certs    -- TLS material for TERMINATED_HTTPS (the cert-fetch hook)
udp      -- UDP listeners: nftables DNAT/SNAT per load balancer, their
            health checks and counters (HAProxy 2.6 does not proxy UDP)
host     -- VIPs on loopback without ARP/ND, tunnel decap (dsr-member's
            code), no auto gateway
engine   -- applies a whole L7 document: the above per load balancer
"""
