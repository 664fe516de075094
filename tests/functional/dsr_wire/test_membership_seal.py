"""A sealed membership on the real Redis (a private tooz namespace): what
it publishes is sealed, the seal moves on every RESEAL_INTERVAL while the
capabilities stay, and a re-join after the backend lost its state carries
a seal too."""

import json
import time
import uuid

import pytest
import redis

from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import membership
from tools.lab import agent_lab

CAPS = {'role': 'tier2', 'ready': True, 'draining': False,
        'tunnel_addresses': {'4': '198.18.7.1'}}


@pytest.fixture
def backend():
    namespace = f'dsrseal-{uuid.uuid4().hex[:8]}'
    client = redis.Redis(host='127.0.0.1', port=6379)
    try:
        yield f'{agent_lab.REDIS}&namespace={namespace}', client, namespace
    finally:
        for key in client.scan_iter(f'{namespace}*'):
            client.delete(key)


def _poll(read, predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f'timed out: {what} ({value})'
        time.sleep(0.05)    # polling with a deadline


def test_a_sealed_membership_seals_again_while_it_lives(
        backend, tmp_path, monkeypatch):
    monkeypatch.setattr(membership, 'REJOIN_CHECK_INTERVAL', 0.05)
    monkeypatch.setattr(capability_seal, 'RESEAL_INTERVAL', 0.2)
    url, client, namespace = backend
    key = str(tmp_path / 'l7a.key')
    auth.generate_key(key)
    public = auth.load_private_key(key).public_key()
    sealer = capability_seal.Sealer(auth.Signer(key), 'l7a', 'edge')
    member = membership.Membership(url, 'l7a', 'edge', CAPS,
                                   sealer=sealer)
    observer = membership.coordinator(url, b'observer')
    observer.start()
    group = membership.group_id('edge')
    assert member.seal_boot == sealer.boot

    def opened():
        caps = json.loads(observer.get_member_capabilities(
            group, b'l7a').get())
        return capability_seal.open_seal(caps, 'l7a', 'edge', public, 60)
    member.start()
    try:
        plain, first = opened()
        assert plain == CAPS
        _, later = _poll(opened, lambda o: o[1].seq >= first.seq + 3,
                         'three more seals')
        assert later.boot == first.boot and later.ts > first.ts
        member.update(dict(CAPS, ready=False))
        assert opened()[0] == dict(CAPS, ready=False)
        # The backend forgets everything: the member joins again, sealed.
        client.delete(*client.scan_iter(f'{namespace}*'))
        plain, rejoined = _poll(
            lambda: opened() if b'l7a' in _members(observer, group)
            else (None, None), lambda o: o[1] is not None, 'the re-join')
        assert plain == dict(CAPS, ready=False)
        assert rejoined.seq > later.seq
    finally:
        member.stop()
        observer.stop()


def _members(coordinator, group):
    try:
        return coordinator.get_members(group).get()
    except Exception:  # noqa: BLE001 -- the group is gone for a while
        return set()
