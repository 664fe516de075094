"""Signatures, envelopes and what an agent accepts (dsr_wire.auth,
amphora_agent.trust) with real Ed25519 keys on disk."""

import os

import pytest

from amphora_agent import trust
from dsr_wire import auth


@pytest.fixture
def keys(tmp_path):
    ctl = str(tmp_path / 'controller.key')
    kid = auth.generate_key(ctl)
    auth.write_public_key(str(tmp_path / 'trusted' / f'{kid}.pub'),
                          auth.load_private_key(ctl).public_key())
    return tmp_path, auth.Signer(ctl)


def snapshot(generation, group='g1'):
    return {'schema_version': 1, 'se_group': group,
            'generation': generation, 'load_balancers': []}


def test_private_keys_are_written_0600_and_insecure_ones_refused(tmp_path):
    path = str(tmp_path / 'se.key')
    auth.generate_key(path, str(tmp_path / 'se.pub'))
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, 0o640)
    with pytest.raises(auth.InsecureKeyFile, match='mode 0640'):
        auth.load_private_key(path)


def test_context_signature_checks_method_args_window_and_nonce(keys):
    _root, signer = keys
    public = auth.load_private_key(signer.path).public_key()
    nonces = auth.NonceCache(60)
    args = {'se_id': 's1', 'se_group': 'g1', 'statuses': {'m': 'ONLINE'}}
    ctxt = signer.context('report_member_status', args)
    auth.verify_context(ctxt, 'report_member_status', args,
                        lambda kid: public, 60, nonces)
    with pytest.raises(auth.AuthError, match='replayed'):
        auth.verify_context(ctxt, 'report_member_status', args,
                            lambda kid: public, 60, nonces)
    fresh = signer.context('report_member_status', args)
    tampered = dict(args, statuses={'m': 'ERROR'})
    with pytest.raises(auth.AuthError, match='bad signature'):
        auth.verify_context(fresh, 'report_member_status', tampered,
                            lambda kid: public, 60, nonces)
    with pytest.raises(auth.AuthError, match='bad signature'):
        auth.verify_context(fresh, 'report_state', args,
                            lambda kid: public, 60, nonces)
    fresh[auth.CONTEXT_KEY]['ts'] -= 120
    with pytest.raises(auth.AuthError, match='outside'):
        auth.verify_context(fresh, 'report_member_status', args,
                            lambda kid: public, 60, nonces)
    with pytest.raises(auth.AuthError, match='unsigned'):
        auth.verify_context({}, 'report_member_status', args,
                            lambda kid: public, 60, nonces)


def test_agent_accepts_only_signed_snapshots_of_its_group_never_older(
        keys):
    root, signer = keys
    t = trust.ControllerTrust('g1', str(root / 'trusted'),
                              str(root / 'state'))
    assert t.open_snapshot(signer.envelope(snapshot(5)))['generation'] == 5
    assert t.open_snapshot(signer.envelope(None)) is None
    t.applied(5)
    assert t.open_snapshot(signer.envelope(snapshot(5)))['generation'] == 5
    for envelope, reason in (
            (snapshot(9), 'not a signed document'),
            (signer.envelope(snapshot(9, 'g2')), "group 'g2'"),
            (signer.envelope(snapshot(4)), 'older than generation 5'),
            (dict(signer.envelope(snapshot(9)),
                  payload=auth.canonical(snapshot(10)).decode()),
             'bad signature')):
        with pytest.raises(auth.AuthError, match=reason):
            t.open_snapshot(envelope)
    # A restarted agent keeps refusing the older generation.
    again = trust.ControllerTrust('g1', str(root / 'trusted'),
                                  str(root / 'state'))
    with pytest.raises(auth.AuthError, match='older than generation 5'):
        again.open_snapshot(signer.envelope(snapshot(4)))


def test_rotation_two_keys_trusted_then_the_old_one_retired(keys):
    root, signer = keys
    t = trust.ControllerTrust('g1', str(root / 'trusted'),
                              str(root / 'state'))
    new = str(root / 'new.key')
    kid = auth.generate_key(new)
    auth.write_public_key(str(root / 'trusted' / f'{kid}.pub'),
                          auth.load_private_key(new).public_key())
    t.keys._last_read = 0    # the once-a-second re-read is due
    assert t.open_snapshot(auth.Signer(new).envelope(snapshot(1)))
    assert t.open_snapshot(signer.envelope(snapshot(1)))
    os.unlink(root / 'trusted' / f'{signer.key_id}.pub')
    t.keys.reload()
    with pytest.raises(auth.AuthError, match='unknown key'):
        t.open_snapshot(signer.envelope(snapshot(1)))


def test_signer_follows_the_key_file_when_it_is_replaced(keys):
    root, signer = keys
    old = signer.key_id
    nxt = str(root / 'controller.key.next')
    auth.generate_key(nxt)
    os.replace(nxt, signer.path)
    kid, _sig = signer.sign(b'x')
    assert kid != old
