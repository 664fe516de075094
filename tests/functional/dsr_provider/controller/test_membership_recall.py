"""SE group memberships read through a Redis that lost its state (every key
of the deployment deleted: a restart without persistence), on the real
Redis with real agent memberships (dsr_wire.membership.Membership)."""

import uuid

import pytest
import redis

from dsr_provider.controller import membership_recall
from dsr_provider.controller import tier2
from dsr_wire import membership
from tools.lab.netns import wait_for

REDIS = 'redis://127.0.0.1:6379?membership_timeout=1&lock_timeout=1'
LEADER_GROUP = b'octavia-dsr-controllers'


@pytest.fixture
def deployment():
    """(url, controller coordinator joined to the leader group, make_se,
    reset): a private namespace of the real Redis, removed after."""
    namespace = f'dsrtest-{uuid.uuid4().hex[:8]}'
    url = f'{REDIS}&namespace={namespace}'
    client = redis.Redis(host='127.0.0.1', port=6379)
    controller = membership.coordinator(url, b'ctl-1')
    controller.start(start_heart=True)
    membership.join(controller, LEADER_GROUP)
    ses = []

    def make_se(se_id, group='g1', caps=None):
        se = membership.Membership(url, se_id, group,
                                   caps or {'role': 'tier1'})
        se.start()
        ses.append(se)
        return se

    def reset():
        keys = list(client.scan_iter(f'{namespace}*'))
        assert keys
        client.delete(*keys)
    try:
        yield url, controller, make_se, reset
    finally:
        for se in ses:
            if not se._stop.is_set():
                se.stop()
        controller.stop()
        for key in client.scan_iter(f'{namespace}*'):
            client.delete(key)


def reader(controller, grace):
    """members_of as the tier-2 watcher reads them, through a recall."""
    return tier2.tooz_members(controller, membership_recall.MembershipRecall(
        controller, LEADER_GROUP, 'ctl-1', grace=grace))


def raw(controller, group):
    return set(membership.members(controller, membership.group_id(group)))


def test_a_backend_reset_does_not_empty_the_groups(deployment):
    url, controller, make_se, reset = deployment
    members_of = reader(controller, grace=60)
    make_se('se-1')
    make_se('se-2')
    assert set(members_of('g1')) == {'se-1', 'se-2'}

    reset()
    # The backend has nothing; the controller still sees the SEs ...
    assert raw(controller, 'g1') == set()
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    assert members_of('g1')['se-1'] == {'role': 'tier1'}
    # ... joined its sentinel again ...
    assert b'ctl-1' in controller.get_members(LEADER_GROUP).get()
    # ... and the SEs join again by themselves.
    wait_for(lambda: raw(controller, 'g1') == {'se-1', 'se-2'}, 15,
             'the SEs joining again')
    assert set(members_of('g1')) == {'se-1', 'se-2'}


def test_a_member_that_leaves_is_gone_at_once(deployment):
    """No reset: a short read is the truth (a dead L7 SE must leave the L4
    rings within 2 s)."""
    url, controller, make_se, reset = deployment
    members_of = reader(controller, grace=60)
    make_se('se-1')
    leaving = make_se('se-2')
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    leaving.stop()
    assert set(members_of('g1')) == {'se-1'}


def test_after_the_grace_reads_are_the_backends_again(deployment):
    url, controller, make_se, reset = deployment
    members_of = reader(controller, grace=2.0)
    make_se('se-1')
    gone = make_se('se-2')
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    # se-2 stops for good right as the backend loses its state: kept
    # through the grace, then dropped.
    gone._stop.set()
    gone._watchdog.join(timeout=10)
    gone._coordinator.stop()
    reset()
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    wait_for(lambda: set(members_of('g1')) == {'se-1'}, 15,
             'the grace to end')
    # A new SE of another group, read the first time during the grace,
    # is read as it is.
    make_se('se-3', group='g2')
    assert set(members_of('g2')) == {'se-3'}


def test_the_controllers_live_agents_read_through_a_reset(deployment):
    """Controller.live_agents (the SEs a change waits for) and the tier-2
    watcher read the same group through one recall, as on the leader:
    each keeps its own values (ids; capabilities) through a reset."""
    from dsr_provider.controller import service as service_mod
    url, controller, make_se, reset = deployment
    svc = service_mod.Controller.__new__(service_mod.Controller)
    svc.coordinator, svc.signer = controller, None
    svc.recall = membership_recall.MembershipRecall(
        controller, LEADER_GROUP, 'ctl-1', grace=60)
    members_of = tier2.tooz_members(controller, svc.recall)
    make_se('se-1', caps={'role': 'tier2'})
    assert svc.live_agents('g1') == {'se-1'}
    assert members_of('g1') == {'se-1': {'role': 'tier2'}}
    reset()
    # Either reader may be the one that finds the reset.
    assert svc.live_agents('g1') == {'se-1'}
    assert members_of('g1') == {'se-1': {'role': 'tier2'}}
    assert svc.live_agents('g1') == {'se-1'}


def test_with_authentication_a_change_waits_for_enrolled_ses_only(
        deployment, tmp_path, caplog):
    """The backend is not authenticated: with authentication on, a member
    of an SE group's tooz group that is not enrolled in that group (a
    stranger, or an SE of another group) is not an SE a change waits for
    -- it would hold every change of the group PENDING, then ERROR -- and
    is logged once."""
    import logging

    from cryptography.hazmat.primitives.asymmetric import ed25519

    from dsr_provider.controller import db as db_mod
    from dsr_provider.controller import enrolment
    from dsr_provider.controller import service as service_mod
    url, controller, make_se, reset = deployment
    db_url = f'sqlite:///{tmp_path}/controller.db'
    db_mod.upgrade(db_url)
    database = db_mod.Database(db_url)
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    enrolment.enrol(database, 'g1', 'se-1', key)
    enrolment.enrol(database, 'g2', 'se-2', key)
    svc = service_mod.Controller.__new__(service_mod.Controller)
    svc.coordinator, svc.database, svc._strangers = controller, database, {}
    svc._enrolled = None
    svc.recall = membership_recall.MembershipRecall(
        controller, LEADER_GROUP, 'ctl-1')
    svc.signer = object()           # authentication on
    for se_id in ('se-1', 'intruder', 'se-2'):
        make_se(se_id)
    # Until the enrolled SEs are read, the backend is believed.
    assert svc.live_agents('g1') == {'se-1', 'intruder', 'se-2'}
    assert svc.read_enrolled() is True
    with caplog.at_level(logging.WARNING):
        assert svc.live_agents('g1') == {'se-1'}
        assert svc.live_agents('g1') == {'se-1'}
    assert caplog.text.count('2 member(s) of the coordination group not '
                             'enrolled in it ignored') == 1
    assert 'intruder, se-2' in caplog.text
    svc.signer = None               # authentication off: tooz is believed
    assert svc.live_agents('g1') == {'se-1', 'intruder', 'se-2'}
    database.engine.dispose()


def test_a_reset_every_se_rejoined_from_is_found_all_the_same(
        deployment, monkeypatch):
    """The sentinel is looked at now and then, not only when a read comes
    back short: gone, it is joined again, so that the next SE that really
    leaves is not taken for a reset."""
    monkeypatch.setattr(membership_recall, 'SENTINEL_CHECK', 0.0)
    url, controller, make_se, reset = deployment
    members_of = reader(controller, grace=60)
    make_se('se-1')
    leaving = make_se('se-2')
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    reset()
    wait_for(lambda: raw(controller, 'g1') == {'se-1', 'se-2'}, 15,
             'the SEs joining again')
    # Nothing came back short, but the sentinel was gone: joined again.
    assert set(members_of('g1')) == {'se-1', 'se-2'}
    assert b'ctl-1' in controller.get_members(LEADER_GROUP).get()
    leaving.stop()
    assert set(members_of('g1')) == {'se-1'}
