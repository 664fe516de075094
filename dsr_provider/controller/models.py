"""The controller's desired state, in its own SQL database.

Octavia objects are stored as the documents the provider driver sent
(octavia-lib's dict form), keyed by id with their parent links, so the
snapshot builder needs no mapping of every Octavia field.
"""

import json

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy import orm


class Base(orm.DeclarativeBase):
    pass


# Text that grows with the deployment.  MySQL/MariaDB TEXT holds 65,535
# bytes and a strict server (the default) refuses a longer write whole
# (an SE's statistics of over 400 listeners and members): LONGTEXT there,
# bounded by the server's max_allowed_packet instead (docs/operations.md).
# SQLAlchemy names MariaDB 'mariadb' in a mariadb:// URL, 'mysql' else.
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb')


class JSONText(sa.types.TypeDecorator):
    """JSON in a text column (LONG_TEXT): portable across MariaDB and
    SQLite.  Every document may outgrow TEXT: an SE's reports grow with
    its group, a status with its change (a graph, a cascade delete), an
    object's with its lists (a listener's allowed_cidrs)."""

    impl = LONG_TEXT
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


def vip_addresses(lb_doc):
    """A stored load balancer's VIP addresses (its document's vip_address
    and additional_vips): every listener is served on each."""
    addresses = [lb_doc['vip_address']] if lb_doc.get('vip_address') else []
    for extra in lb_doc.get('additional_vips') or []:
        if extra.get('ip_address'):
            addresses.append(extra['ip_address'])
    return addresses


def l4_protocol(listener_doc):
    """The transport protocol the SEs steer a stored listener's packets
    by: an HTTP(S) listener of tier 2 is TCP to its L4 SEs."""
    protocol = listener_doc.get('protocol')
    return protocol if protocol in ('UDP', 'SCTP') else 'TCP'


class SEGroup(Base):
    __tablename__ = 'se_groups'
    name = sa.Column(sa.String(64), primary_key=True)
    # Bumped by every change of a load balancer of the group.
    generation = sa.Column(sa.BigInteger, nullable=False, default=0)
    # The last generation announced to the agents (config_changed).
    published_generation = sa.Column(sa.BigInteger, nullable=False,
                                     default=0)
    # 'tier2': the L7 SE group of tier-2 load balancers (its agents get the
    # L7 document, dsr_wire/l7.py); null: an L4 group.
    role = sa.Column(sa.String(16))


class LoadBalancer(Base):
    __tablename__ = 'load_balancers'
    id = sa.Column(sa.String(36), primary_key=True)
    se_group = sa.Column(sa.String(64), nullable=False, index=True)
    # Tier 2: the SE group of its L7 service engines (null: tier 1).
    l7_se_group = sa.Column(sa.String(64), index=True)
    doc = sa.Column(JSONText, nullable=False)
    # Why the controller left it out of the snapshot (capacity), or null.
    rejected = sa.Column(sa.Text)
    # {field: value} of a refused update of the running object: what
    # Octavia holds and the SEs do not run, until an accepted update
    # sends those fields again (it is ERROR meanwhile, also as a
    # parent), or null.
    diverged = sa.Column(JSONText)
    # The generation of its last accepted change of the group that runs
    # every object (se_group; tier 2: l7_se_group), and tier 2, of its L4
    # group when the change touched the L4 SEs: what each SE must have
    # applied to run it as desired (dsr-status).  Null: none recorded.
    changed_generation = sa.Column(sa.BigInteger)
    l4_changed_generation = sa.Column(sa.BigInteger)


class Listener(Base):
    __tablename__ = 'listeners'
    id = sa.Column(sa.String(36), primary_key=True)
    loadbalancer_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    # Why the controller left it out of the snapshot (capacity), or null.
    rejected = sa.Column(sa.Text)
    # {field: value} of a refused update of the running object: what
    # Octavia holds and the SEs do not run, until an accepted update
    # sends those fields again (it is ERROR meanwhile, also as a
    # parent), or null.
    diverged = sa.Column(JSONText)


class Pool(Base):
    __tablename__ = 'pools'
    id = sa.Column(sa.String(36), primary_key=True)
    loadbalancer_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    # Why the controller left it out of the snapshot (capacity), or null.
    rejected = sa.Column(sa.Text)
    # {field: value} of a refused update of the running object: what
    # Octavia holds and the SEs do not run, until an accepted update
    # sends those fields again (it is ERROR meanwhile, also as a
    # parent), or null.
    diverged = sa.Column(JSONText)


class Member(Base):
    __tablename__ = 'members'
    id = sa.Column(sa.String(36), primary_key=True)
    pool_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    # Why the controller left it out of the snapshot (capacity), or null.
    rejected = sa.Column(sa.Text)


class HealthMonitor(Base):
    __tablename__ = 'health_monitors'
    id = sa.Column(sa.String(36), primary_key=True)
    pool_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    # Why the controller left it out of the snapshot (capacity), or null.
    rejected = sa.Column(sa.Text)


class L7Policy(Base):
    __tablename__ = 'l7policies'
    id = sa.Column(sa.String(36), primary_key=True)
    listener_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    rejected = sa.Column(sa.Text)
    # As Listener.diverged: a refused update its L7 SEs could not run
    # (the parent of its rules).
    diverged = sa.Column(JSONText)


class L7Rule(Base):
    __tablename__ = 'l7rules'
    id = sa.Column(sa.String(36), primary_key=True)
    l7policy_id = sa.Column(sa.String(36), nullable=False, index=True)
    doc = sa.Column(JSONText, nullable=False)
    rejected = sa.Column(sa.Text)


class L7SEMember(Base):
    """A ready L7 service engine of an L7 SE group, as the leader last saw
    it in tooz (controller/tier2.py): the L4 snapshots of the tier-2 load
    balancers on that group steer to these."""

    __tablename__ = 'l7_se_members'
    l7_se_group = sa.Column(sa.String(64), primary_key=True)
    se_id = sa.Column(sa.String(128), primary_key=True)
    # {"4": address, "6": address}: where the L4 SEs tunnel to.
    tunnel_addresses = sa.Column(JSONText, nullable=False)
    # Draining: weight 0 in the L4 rings (no new flows).
    draining = sa.Column(sa.Boolean, nullable=False)
    # {"loadbalancers": [id, ...], "listeners": [id, ...]} the SE left
    # ERROR alone (its signed reports' rejected_objects): their L4 pools
    # leave it out.  Null: it serves all it runs.
    unserved = sa.Column(JSONText)


class L7FlapPenalty(Base):
    """An L7 SE's flap penalty (controller/l7_damping.py), kept by the
    leader when it changes so that the next leader goes on from it: a
    crash-looping L7 SE stays out of the L4 pools across a leader
    change."""

    __tablename__ = 'l7_flap_penalties'
    l7_se_group = sa.Column(sa.String(64), primary_key=True)
    se_id = sa.Column(sa.String(128), primary_key=True)
    penalty = sa.Column(sa.Double, nullable=False)
    # When it was that (epoch seconds): it halves every half-life since.
    at = sa.Column(sa.Double, nullable=False)
    suppressed = sa.Column(sa.Boolean, nullable=False)


class L7SELeftOut(Base):
    """Why the leader left an L7 SE of an L7 group out of the L4 pools at
    its last look (controller/tier2.py), written when that changes: what
    dsr-status shows of an L7 SE that reports but is not in the rings."""

    __tablename__ = 'l7_se_left_out'
    l7_se_group = sa.Column(sa.String(64), primary_key=True)
    se_id = sa.Column(sa.String(128), primary_key=True)
    reason = sa.Column(LONG_TEXT, nullable=False)
    # When the leader first gave this reason (epoch seconds).
    since = sa.Column(sa.Double, nullable=False)


class PendingStatus(Base):
    """A provisioning status owed to Octavia once the agents applied
    `generation` (or rejected it)."""

    __tablename__ = 'pending_statuses'
    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    se_group = sa.Column(sa.String(64), nullable=False, index=True)
    generation = sa.Column(sa.BigInteger, nullable=False)
    # Tier 2: a change both SE groups of a load balancer run waits for
    # the L4 group's agents too (null: one group).
    also_se_group = sa.Column(sa.String(64))
    also_generation = sa.Column(sa.BigInteger)
    # Octavia's status document (octavia-lib update_loadbalancer_status).
    status = sa.Column(JSONText, nullable=False)
    # Object whose existence in Octavia's DB must be visible first (the API
    # calls the driver before it commits): [resource, id] or null.
    wait_for = sa.Column(JSONText)
    # Epoch seconds: DOUBLE, never FLOAT (MySQL FLOAT is 4 bytes, 128 s
    # granularity at today's epoch).
    created_at = sa.Column(sa.Double, nullable=False)


class ProcessedChange(Base):
    """A change message of the provider driver this controller committed
    (its oslo.messaging message_id), kept [dsr_controller] tombstone_ttl:
    RabbitMQ redelivers a message whose controller died after the commit
    and before its acknowledgement, possibly after later changes of the
    same objects, which it must not undo."""

    __tablename__ = 'processed_changes'
    message_id = sa.Column(sa.String(64), primary_key=True)
    processed_at = sa.Column(sa.Double, nullable=False, index=True)


class Tombstone(Base):
    """An object the controller deleted (directly or in a cascade), kept
    [dsr_controller] tombstone_ttl: a redelivered create or update of it
    must not bring it back, and a second delete of it (after a failed
    one) must find what it waits for."""

    __tablename__ = 'tombstones'
    # Octavia's status key (loadbalancers, listeners, ...) and the id.
    kind = sa.Column(sa.String(16), primary_key=True)
    id = sa.Column(sa.String(36), primary_key=True)
    # Its parent's id as its row had it (load balancer, pool, listener or
    # L7 policy: store._PARENT says which); null for a load balancer.
    parent_id = sa.Column(sa.String(36))
    # The SE groups that ran it: [the group owing its status, the L4
    # group of a tier-2 load balancer too].
    se_groups = sa.Column(JSONText, nullable=False)
    # What Octavia was told of its delete: null while owed, DELETED or
    # ERROR (then a second delete waits for the SEs again).
    outcome = sa.Column(sa.String(16))
    # Epoch seconds (DOUBLE, see PendingStatus.created_at).
    deleted_at = sa.Column(sa.Double, nullable=False, index=True)


class AgentState(Base):
    __tablename__ = 'agent_states'
    se_id = sa.Column(sa.String(128), primary_key=True)
    se_group = sa.Column(sa.String(64), nullable=False, index=True)
    applied_generation = sa.Column(sa.BigInteger)
    rejected_generation = sa.Column(sa.BigInteger)
    # The agent's text, unbounded (an exception's message).
    error = sa.Column(LONG_TEXT)
    member_statuses = sa.Column(JSONText)
    stats = sa.Column(JSONText)
    # {kind: {object_id: reason}} for applied_generation: objects the agent
    # left out of its dataplane alone.
    rejected_objects = sa.Column(JSONText)
    # {'max_listeners': n, 'max_members': n, 'ring_size': n,
    #  'conn_table_size': n}
    limits = sa.Column(JSONText)
    # The same keys: what the SE's dataplane holds against each limit, as
    # it counts it (conn_table_size: flows in its connection table); null:
    # not reported (an L7 SE, an older agent, before its first apply).
    held = sa.Column(JSONText)
    # {'bgp': {...}, 'health': {...}}: the agent's supervised helpers.
    helpers = sa.Column(JSONText)
    # False: the SE cannot forward and announces nothing; null: not said.
    serviceable = sa.Column(sa.Boolean)
    # Maglev ring ABI the agent builds rings with (null: older agent); the
    # SEs of a group must agree or flows land on different members.
    ring_abi = sa.Column(sa.Integer)
    # {'peers': {address: session state}, 'announced': [prefix, ...]}
    bgp = sa.Column(JSONText)
    # {"4": address, "6": address}: an L7 SE's tunnel addresses from its
    # signed report (null: an L4 SE, or an L7 agent from before 0017).
    tunnel_addresses = sa.Column(JSONText)
    # The boot id of the L7 agent run that seals its tooz capabilities
    # (its signed report says so; null: it does not seal): another run's
    # seal, or an unsealed entry, is not its own (tier2.trusted_only).
    seal_boot = sa.Column(sa.String(64))
    # {report kind: signing time (the SE's clock) of the last stored}:
    # an older report of a kind that arrives later is dropped
    # (Store.record_agent); and under 'lags', how late each was stored
    # (store.report_lag).
    report_times = sa.Column(JSONText)
    # Digest of member_statuses, rejected_objects and serviceable (store.
    # statuses_digest): the leader's operating round compares digests, not
    # the (group-sized) statuses themselves.
    statuses_digest = sa.Column(sa.String(32))
    updated_at = sa.Column(sa.Double, nullable=False)


class CarriedStats(Base):
    """What an SE counted for a listener before its current counters
    (earlier dataplane runs, or all of it once its row or group is gone):
    the listener's total is these plus the SEs' current counters
    (listener_totals.py)."""

    __tablename__ = 'carried_stats'
    se_id = sa.Column(sa.String(128), primary_key=True)
    # The SE's group when it counted: only the group that counts the
    # listener's traffic adds to its totals.
    se_group = sa.Column(sa.String(64), primary_key=True)
    listener_id = sa.Column(sa.String(36), primary_key=True, index=True)
    bytes_in = sa.Column(sa.BigInteger, nullable=False)
    bytes_out = sa.Column(sa.BigInteger, nullable=False)
    request_errors = sa.Column(sa.BigInteger, nullable=False)
    total_connections = sa.Column(sa.BigInteger, nullable=False)


class SEKey(Base):
    """An enrolled SE: the only key its messages are accepted with, and
    the only group it may read and report about.  Revoking deletes it."""

    __tablename__ = 'se_keys'
    se_id = sa.Column(sa.String(128), primary_key=True)
    se_group = sa.Column(sa.String(64), nullable=False, index=True)
    # auth.key_id of the key, for logs and list-ses.
    key_id = sa.Column(sa.String(16), nullable=False)
    # Base64 of the raw 32-byte Ed25519 public key.
    public_key = sa.Column(sa.String(64), nullable=False)
    enrolled_at = sa.Column(sa.Double, nullable=False)


class SeenNonce(Base):
    """A signed agent message some controller of the deployment accepted:
    the same message again is a replay, whichever controller it reaches
    (replay.py).  Kept until its timestamp is out of the replay window."""

    __tablename__ = 'seen_nonces'
    # SHA-256 (hex) of "<key id>:<nonce>": bounded whatever the nonce.
    digest = sa.Column(sa.String(64), primary_key=True)
    # The message's timestamp + the window: the purge deletes by it.
    expires_at = sa.Column(sa.Double, nullable=False, index=True)


class NeutronOwned(Base):
    """What the controller added to a Neutron port (neutron_ports.py):
    only these are ever removed, so the operator's own pairs and groups
    stay.  Written before the port update and dropped after the removal,
    so a crash in between leaves a row to retry, never an orphan pair."""

    __tablename__ = 'neutron_owned'
    port_id = sa.Column(sa.String(36), primary_key=True)
    # 'pair' (value: an allowed_address_pairs address) or 'sg' (value: a
    # security group id).
    kind = sa.Column(sa.String(16), primary_key=True)
    value = sa.Column(sa.String(64), primary_key=True)


class NeutronMemberPort(Base):
    """The Neutron port a member's address belongs to, and why the
    controller could not update it (its operating status is then ERROR)."""

    __tablename__ = 'neutron_member_ports'
    member_id = sa.Column(sa.String(36), primary_key=True)
    subnet_id = sa.Column(sa.String(36))
    address = sa.Column(sa.String(64), nullable=False)
    # Null: no port holds the address (not a Neutron port).
    port_id = sa.Column(sa.String(36), index=True)
    reason = sa.Column(sa.Text)
    checked_at = sa.Column(sa.Double, nullable=False)
