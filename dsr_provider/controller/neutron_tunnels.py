"""The security group that admits the SEs' tunnels into member ports.

One group per project that has member ports (Neutron attaches only a
port's own project's groups), named octavia-dsr-tunnels and managed
entirely by the controller: its ingress rules are exactly the set below,
ingress rules added by hand are removed.  Neutron's egress defaults stay.

Per tunnel source S (an SE's address or CIDR):

| S is   | rules (ingress, remote_ip_prefix S)                           |
|--------|---------------------------------------------------------------|
| IPv4   | protocol 4 (IPv4-in-IPv4), 47 (GRE); any protocol when        |
|        | any_from_ipv4 (IPv6-in-IPv4 is protocol 41 in IPv4, and       |
|        | Neutron refuses 41 with ethertype IPv4)                        |
| IPv6   | protocol 4 (IPv4-in-IPv6), 41 (IPv6-in-IPv6), 47 (GRE)        |
"""

import collections
import ipaddress

from openstack import exceptions as sdk_exceptions
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

GROUP_NAME = 'octavia-dsr-tunnels'
DESCRIPTION = ('Managed by octavia-dsr: tunnelled traffic from the DSR '
               'service engines to load-balancer members.')

Rule = collections.namedtuple('Rule', 'ethertype protocol remote_ip_prefix')


def wanted_rules(sources, any_from_ipv4=True):
    rules = set()
    for source in sources:
        net = ipaddress.ip_network(str(source), strict=False)
        prefix = str(net)
        if net.version == 4:
            rules.update({Rule('IPv4', '4', prefix), Rule('IPv4', '47',
                                                          prefix)})
            if any_from_ipv4:
                rules.add(Rule('IPv4', None, prefix))
        else:
            rules.update(Rule('IPv6', p, prefix) for p in ('4', '41', '47'))
    return rules


def _rule_of(rule):
    prefix = rule.remote_ip_prefix
    if prefix is not None:
        prefix = str(ipaddress.ip_network(prefix, strict=False))
    protocol = None if rule.protocol in (None, 'any') else str(rule.protocol)
    return Rule(rule.ether_type, protocol, prefix)


class TunnelGroups:
    """ensure(project_id) -> the project's tunnel group id, its rules
    brought to wanted_rules(sources)."""

    def __init__(self, network, sources, any_from_ipv4=True):
        self.network = network
        self.sources = list(sources)
        self.any_from_ipv4 = any_from_ipv4
        self._ensured = {}          # project -> group id, for this round

    def forget(self):
        """Check every group again (a full reconciliation)."""
        self._ensured.clear()

    def ensure(self, project_id):
        if project_id in self._ensured:
            return self._ensured[project_id]
        groups = sorted(self.network.security_groups(
            name=GROUP_NAME, project_id=project_id), key=lambda g: g.id)
        if groups:
            # Two controllers racing may both have created one: the
            # smallest id is used by both, the other stays unused.
            group = groups[0]
        else:
            group = self.network.create_security_group(
                name=GROUP_NAME, description=DESCRIPTION,
                project_id=project_id)
            LOG.info('created security group %s (%s) in project %s',
                     GROUP_NAME, group.id, project_id)
        self._sync_rules(group, project_id)
        self._ensured[project_id] = group.id
        return group.id

    def _sync_rules(self, group, project_id):
        wanted = wanted_rules(self.sources, self.any_from_ipv4)
        have = {}
        for rule in self.network.security_group_rules(
                security_group_id=group.id, direction='ingress'):
            have.setdefault(_rule_of(rule), []).append(rule.id)
        for rule, ids in have.items():
            for rule_id in ids[0 if rule not in wanted else 1:]:
                self.network.delete_security_group_rule(rule_id,
                                                        ignore_missing=True)
        for rule in sorted(wanted - set(have), key=str):
            attrs = {'security_group_id': group.id, 'direction': 'ingress',
                     'ether_type': rule.ethertype,
                     'remote_ip_prefix': rule.remote_ip_prefix,
                     'project_id': project_id}
            if rule.protocol is not None:
                attrs['protocol'] = rule.protocol
            try:
                self.network.create_security_group_rule(**attrs)
            except sdk_exceptions.ConflictException:
                pass    # created meanwhile by another controller
