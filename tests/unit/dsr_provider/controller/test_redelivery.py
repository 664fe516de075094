"""A change message RabbitMQ delivers again (its controller died after the
commit, before the acknowledgement) is ignored by its message_id, so it
cannot undo a later change of the same objects.  Real Store on SQLite,
the real ChangeEndpoint, the metadata oslo.messaging hands it."""

import logging
import threading

import oslo_messaging as messaging
import pytest
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import endpoints
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider.controller.test_endpoints import change
from tests.unit.dsr_provider.controller.test_endpoints import owed
from tests.unit.dsr_provider.controller.test_ports import stored
from tests.unit.dsr_provider.controller.test_store import graph

HANDLED = messaging.NotificationResult.HANDLED
REQUEUE = messaging.NotificationResult.REQUEUE


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(endpoints.time, 'sleep', lambda s: None)


@pytest.fixture
def ep(store):
    return endpoints.ChangeEndpoint(endpoints.ProviderEndpoint(store))


def deliver(ep, message_id, event_type, payload):
    return ep.info({}, 'octavia-dsr-provider', event_type, payload,
                   {'message_id': message_id,
                    'timestamp': '2026-12-06 23:00:00.000000'})


MEMBER = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
          'protocol_port': 80, 'weight': 1, 'admin_state_up': True}


def generation(store):
    with store.db.session() as s:
        return s.get(models.SEGroup, 'g1').generation


def test_a_create_redelivered_after_an_update_does_not_undo_it(
        store, ep, caplog):
    store.create_loadbalancer(graph())
    assert deliver(ep, 'msg-create', *change(
        'member_create', member=MEMBER)) == HANDLED
    assert deliver(ep, 'msg-update', *change(
        'member_update', old_member=MEMBER,
        new_member={'weight': 0, 'admin_state_up': False})) == HANDLED
    before = (owed(store), generation(store))
    with caplog.at_level(logging.WARNING):
        assert deliver(ep, 'msg-create', *change(
            'member_create', member=MEMBER)) == HANDLED
    doc = stored(store, 'members', 'm9')
    assert (doc['weight'], doc['admin_state_up']) == (0, False)
    # Nothing owed again, no new generation for the SEs.
    assert (owed(store), generation(store)) == before
    assert 'member_create ignored: message msg-create was applied ' \
        'already (a redelivered message)' in caplog.text


def test_a_message_is_recorded_by_the_transaction_that_commits_it(
        store, ep, monkeypatch):
    """A first try the database refused is no commit: the same delivery's
    retry applies it, and only then is it recorded."""
    store.create_loadbalancer(graph())
    put_member = store.put_member
    failures = [sa_exc.OperationalError('INSERT', {}, Exception('gone'))]

    def flaky(*args):
        if failures:
            raise failures.pop()
        return put_member(*args)
    monkeypatch.setattr(store, 'put_member', flaky)
    assert deliver(ep, 'msg-1', *change('member_create',
                                        member=MEMBER)) == HANDLED
    assert stored(store, 'members', 'm9')['weight'] == 1
    with store.db.session() as s:
        assert [r.message_id for r in s.query(models.ProcessedChange)] == [
            'msg-1']


def test_a_change_refused_as_error_is_recorded_too(store, ep):
    """An update of an unknown object is ERROR; delivered again it is not
    reported a second time."""
    assert deliver(ep, 'msg-1', *change(
        'member_update', old_member=MEMBER,
        new_member={'weight': 3})) == HANDLED
    assert deliver(ep, 'msg-1', *change(
        'member_update', old_member=MEMBER,
        new_member={'weight': 3})) == HANDLED
    assert owed(store) == [('members', 'm9', 'ERROR')]


def test_messages_without_an_id_and_other_threads_are_not_recorded(
        store, ep):
    store.create_loadbalancer(graph())
    assert ep.info({}, 'octavia-dsr-provider', *change(
        'member_create', member=MEMBER), {}) == HANDLED
    seen = []
    thread = threading.Thread(
        target=lambda: seen.append(store_mod.CHANGE_MESSAGE.get()))
    thread.start()
    thread.join()
    assert seen == [None] and store_mod.CHANGE_MESSAGE.get() is None
    with store.db.session() as s:
        assert s.query(models.ProcessedChange).count() == 0


def test_recorded_messages_are_purged_with_the_tombstones(store, ep):
    store.create_loadbalancer(graph())
    deliver(ep, 'msg-old', *change('member_create', member=MEMBER))
    with store.db.session() as s:
        s.get(models.ProcessedChange, 'msg-old').processed_at -= 3600
    deliver(ep, 'msg-new', *change('member_update', old_member=MEMBER,
                                   new_member={'weight': 2}))
    store.purge_tombstones(60)
    with store.db.session() as s:
        assert [r.message_id for r in s.query(models.ProcessedChange)] == [
            'msg-new']
