"""SE group membership through tooz (Redis by default, file:// on one host).

Each agent joins the group of its SE group with its SE id; its capabilities
carry the tunnel addresses and role so the controller knows which SEs exist
and where tunnels come from.  Membership expires when heartbeats stop.
"""

import json
import logging

from tooz import coordination

LOG = logging.getLogger(__name__)


def group_id(se_group):
    return f'octavia-dsr.{se_group}'.encode()


class Membership:
    def __init__(self, backend_url, se_id, se_group, capabilities):
        self.se_group = se_group
        self._group = group_id(se_group)
        self._capabilities = json.dumps(capabilities).encode()
        self._coordinator = coordination.get_coordinator(
            backend_url, se_id.encode())

    def start(self):
        self._coordinator.start(start_heart=True)
        try:
            self._coordinator.create_group(self._group).get()
        except coordination.GroupAlreadyExist:
            pass
        try:
            self._coordinator.join_group(self._group,
                                         self._capabilities).get()
        except coordination.MemberAlreadyExist:
            self._coordinator.update_capabilities(
                self._group, self._capabilities).get()

    def members(self):
        """{se_id: capabilities} of the live members of the group."""
        result = {}
        ids = self._coordinator.get_members(self._group).get()
        for member in ids:
            try:
                caps = self._coordinator.get_member_capabilities(
                    self._group, member).get()
                result[member.decode()] = json.loads(caps)
            except coordination.MemberNotJoined:
                continue
        return result

    def run_watchers(self):
        self._coordinator.run_watchers()

    def stop(self):
        try:
            self._coordinator.leave_group(self._group).get()
        except (coordination.MemberNotJoined, coordination.GroupNotCreated):
            pass
        except coordination.ToozError as exc:
            LOG.warning('leaving %s failed: %s', self._group, exc)
        self._coordinator.stop()
