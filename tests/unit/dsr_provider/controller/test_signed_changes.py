"""The provider driver's changes are signed (dsr_wire/changes.py): the
broker is not a trust boundary, so a controller with authentication on
applies a change only when a provider driver's key signed it.  The real
driver-side ControllerAPI signs, the real ChangeEndpoint verifies, on the
real Store (SQLite)."""

import logging
import time

import oslo_messaging as messaging
import pytest

from dsr_provider.controller import endpoints
from dsr_provider.controller import models
from dsr_provider import rpc_api
from dsr_wire import auth
from tests.unit.dsr_provider.controller.test_ports import stored
from tests.unit.dsr_provider.controller.test_store import graph

HANDLED = messaging.NotificationResult.HANDLED
MEMBER = {'member_id': 'm9', 'pool_id': 'p1', 'address': '198.19.9.2',
          'protocol_port': 80, 'weight': 1, 'admin_state_up': True}


class Captured:
    """The driver's ChangeClient, keeping what it would publish."""

    def __init__(self):
        self.sent = []

    def cast(self, ctxt, method, **kwargs):
        self.sent.append((ctxt, method, rpc_api.payload(**kwargs)))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(endpoints.time, 'sleep', lambda s: None)


@pytest.fixture
def keys(tmp_path):
    """(provider key path, trusted provider keys dir, a stranger's key)."""
    trusted = tmp_path / 'providers'
    kid = auth.generate_key(str(tmp_path / 'provider.key'))
    auth.write_public_key(
        str(trusted / f'{kid}.pub'),
        auth.load_private_key(str(tmp_path / 'provider.key')).public_key())
    auth.generate_key(str(tmp_path / 'stranger.key'))
    return (str(tmp_path / 'provider.key'), str(trusted),
            str(tmp_path / 'stranger.key'))


def driver(key):
    client = Captured()
    return client, rpc_api.ControllerAPI(client=client,
                                         signer=auth.Signer(key))


def endpoint(store, trusted, **kwargs):
    return endpoints.ChangeEndpoint(
        endpoints.ProviderEndpoint(store),
        key_for=auth.TrustedKeys(trusted, 'provider', required=False),
        window=3600.0, **kwargs)


def deliver(ep, sent, message_id='m-1'):
    ctxt, method, payload = sent
    return ep.info(ctxt, 'octavia-dsr-provider', method, payload,
                   {'message_id': message_id})


def members(store):
    with store.db.session() as s:
        return sorted(m.id for m in s.query(models.Member))


def test_a_change_the_driver_signed_is_applied(store, keys):
    store.create_loadbalancer(graph())
    client, api = driver(keys[0])
    api.member_create(MEMBER)
    assert deliver(endpoint(store, keys[1]), client.sent[0]) == HANDLED
    assert members(store) == ['m1', 'm2', 'm9']


@pytest.mark.parametrize('forge', ['unsigned', 'stranger', 'tampered',
                                   'other method', 'too old'])
def test_a_forged_change_is_refused_and_changes_nothing(
        store, keys, forge, caplog, monkeypatch):
    store.create_loadbalancer(graph())
    key = keys[2] if forge == 'stranger' else keys[0]
    client, api = driver(key)
    api.member_create(MEMBER)
    ctxt, method, payload = client.sent[0]
    if forge == 'unsigned':
        ctxt = {}
    elif forge == 'tampered':
        payload['args']['member']['address'] = '203.0.113.66'
    elif forge == 'other method':
        method = 'member_update'
        payload = rpc_api.payload(old_member=MEMBER, new_member=MEMBER)
    elif forge == 'too old':
        client.sent.clear()
        signed_at = time.time() - 7200      # the window is 3600 s
        with monkeypatch.context() as m:
            m.setattr(auth.time, 'time', lambda: signed_at)
            api.member_create(MEMBER)
        ctxt, method, payload = client.sent[0]
    ep = endpoint(store, keys[1])
    with caplog.at_level(logging.WARNING):
        assert deliver(ep, (ctxt, method, payload)) == HANDLED
    assert members(store) == ['m1', 'm2']
    assert ep.refusals.total() == 1
    assert 'auth: refused change' in caplog.text


def test_a_signed_change_replayed_under_another_message_id_is_ignored(
        store, keys):
    """The signature does not cover the broker's message_id: the nonce
    it signs is what is recorded."""
    store.create_loadbalancer(graph())
    client, api = driver(keys[0])
    api.member_create(MEMBER)
    api.member_update(MEMBER, {'weight': 0})
    ep = endpoint(store, keys[1])
    assert deliver(ep, client.sent[0], 'm-1') == HANDLED
    assert deliver(ep, client.sent[1], 'm-2') == HANDLED
    assert deliver(ep, client.sent[0], 'm-3') == HANDLED    # replayed
    assert stored(store, 'members', 'm9')['weight'] == 0


def test_unsigned_changes_only_when_allowed_and_never_forged_ones(
        store, keys):
    store.create_loadbalancer(graph())
    client, api = driver(keys[2])           # not trusted
    api.member_create(MEMBER)
    ep = endpoint(store, keys[1], unsigned=True)
    assert deliver(ep, client.sent[0]) == HANDLED
    assert members(store) == ['m1', 'm2']   # signed, by a stranger
    ctxt, method, payload = client.sent[0]
    assert deliver(ep, ({}, method, payload)) == HANDLED
    assert members(store) == ['m1', 'm2', 'm9']


def test_no_provider_key_yet_refuses_every_change(store, keys, tmp_path):
    """A controller whose provider_keys_dir is missing starts (and logs
    it), refusing every change until a key is put there."""
    store.create_loadbalancer(graph())
    client, api = driver(keys[0])
    api.member_create(MEMBER)
    ep = endpoint(store, str(tmp_path / 'nowhere'))
    assert deliver(ep, client.sent[0]) == HANDLED
    assert members(store) == ['m1', 'm2']
    assert ep.refusals.total() == 1


def test_the_driver_without_a_key_sends_unsigned(caplog):
    client = Captured()

    class Conf:
        class dsr_provider:
            signing_key = None
    api = rpc_api.ControllerAPI(client=client, conf=Conf)
    with caplog.at_level(logging.WARNING):
        api.member_delete({'member_id': 'm'})
    assert client.sent[0][0] == {}
    assert 'signing_key is unset' in caplog.text
