"""Seals of the L7 SEs' tooz capabilities: what a Sealer signs opens with
the SE's public key, for that SE and group, within the window; anything
altered, moved or malformed raises AuthError naming why."""

import math

import pytest

from dsr_wire import auth
from dsr_wire import capability_seal as cs

CAPS = {'role': 'tier2', 'ready': True, 'draining': False,
        'tunnel_addresses': {'4': '198.18.7.1'}, 'l7_contract': 2}


@pytest.fixture
def keys(tmp_path):
    paths = {}
    for name in ('se', 'other'):
        path = str(tmp_path / f'{name}.key')
        auth.generate_key(path)
        paths[name] = path
    return ({n: auth.Signer(p) for n, p in paths.items()},
            {n: auth.load_private_key(p).public_key()
             for n, p in paths.items()})


def test_a_seal_opens_with_the_ses_key_and_counts_up(keys):
    signers, public = keys
    sealer = cs.Sealer(signers['se'], 'l7a', 'edge', clock=lambda: 1000.0)
    first, second = sealer.seal(CAPS), sealer.seal(dict(CAPS))
    plain, seal = cs.open_seal(first, 'l7a', 'edge', public['se'], 60,
                               clock=lambda: 1030.0)
    assert plain == CAPS and cs.unsealed(first) == CAPS
    assert (seal.boot, seal.seq, seal.ts) == (sealer.boot, 1, 1000.0)
    assert cs.open_seal(second, 'l7a', 'edge', public['se'], 60,
                        clock=lambda: 1000.0)[1].seq == 2
    # Sealing again replaces the seal, not nests it.
    assert cs.open_seal(sealer.seal(first), 'l7a', 'edge', public['se'],
                        60, clock=lambda: 1000.0)[0] == CAPS
    assert cs.Sealer(signers['se'], 'l7a', 'edge').boot != sealer.boot


@pytest.mark.parametrize('change, reason', [
    (lambda c: dict(c, ready=False), 'bad signature'),
    (lambda c: dict(c, extra=1), 'bad signature'),
    (lambda c: {k: v for k, v in c.items() if k != 'l7_contract'},
     'bad signature'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], seq=99)),
     'bad signature'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], ts=1001.0)),
     'bad signature'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], boot='0' * 32)),
     'bad signature'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], boot='x')),
     'malformed seal'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], ts=1000)),
     'malformed seal'),
    (lambda c: dict(c, x=float('nan')), 'malformed capabilities'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], sig='!!')),
     'bad signature'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], ts=math.nan)),
     'malformed seal'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], seq=True)),
     'malformed seal'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], seq='1')),
     'malformed seal'),
    (lambda c: dict(c, dsr_seal=dict(c['dsr_seal'], v=2)),
     'malformed seal'),
    (lambda c: dict(c, dsr_seal={k: v for k, v in c['dsr_seal'].items()
                                 if k != 'sig'}), 'malformed seal'),
    (lambda c: dict(c, dsr_seal='sealed'), 'not sealed'),
    (cs.unsealed, 'not sealed'),
])
def test_an_altered_seal_does_not_open(keys, change, reason):
    signers, public = keys
    sealed = cs.Sealer(signers['se'], 'l7a', 'edge',
                       clock=lambda: 1000.0).seal(CAPS)
    with pytest.raises(auth.AuthError, match=reason):
        cs.open_seal(change(sealed), 'l7a', 'edge', public['se'], 60,
                     clock=lambda: 1000.0)


def test_a_seal_is_for_one_se_one_group_one_key_and_a_window(keys):
    signers, public = keys
    sealed = cs.Sealer(signers['se'], 'l7a', 'edge',
                       clock=lambda: 1000.0).seal(CAPS)

    def opens(se='l7a', group='edge', key='se', now=1000.0):
        try:
            cs.open_seal(sealed, se, group, public[key], 60,
                         clock=lambda: now)
        except auth.AuthError as exc:
            return str(exc)
        return True
    assert opens() is True
    assert opens(se='l7b') == 'bad signature'
    assert opens(group='other') == 'bad signature'
    assert opens(key='other') == 'bad signature'
    assert opens(now=1060.0) is True and opens(now=940.0) is True
    assert 'outside the 60 s window' in opens(now=1060.5)
    assert 'outside the 60 s window' in opens(now=939.0)
