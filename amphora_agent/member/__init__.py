"""dsr-member: prepare, check and describe a tier-1 DSR server.

A member of a DSR pool receives the client's packets inside a tunnel from
an SE, must take them in for the VIP (held on a loopback, never announced
by ARP/ND) and answers the client directly from the VIP.  This package does
that preparation on Linux (cli setup/teardown), diagnoses it (check) and
renders the same for first boot (cloud-init) and for Windows servers.
"""
