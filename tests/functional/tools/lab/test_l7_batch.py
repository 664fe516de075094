"""tools/lab/l7_batch.py with a real ``dsr-l7 batch`` in a namespace: one
process answers command after command; a batch that is gone is told, not
waited for, and Engines.stop still stops that L7 SE with a dsr-l7 of its
own (a lab's teardown leaves nothing behind)."""

import os

import pytest

from tools.lab import l7_batch
from tools.lab import netns
from tools.lab import tier2_path


@pytest.fixture
def engines(make_topology, tmp_path):
    topo = make_topology(n_se=1, n_members=1)
    state = tmp_path / 'state'
    (state / 'certs').mkdir(parents=True)

    def config_file(name):
        return tier2_path.write_l7_config(
            str(tmp_path / f'{name}.conf'), topo, name, str(state),
            str(tmp_path / 'no-decap-pins'))

    found = l7_batch.Engines(topo, config_file, str(tmp_path))
    yield found
    found.stop(list(found.batches))


def test_one_batch_answers_each_command(engines):
    first = engines.call('m1', 'stats')
    assert first == {'command': 'stats', 'rc': 0, 'output': {}}
    pid = engines.batches['m1'].proc.pid
    refused = engines.call('m1', 'frobnicate', 'now')
    assert refused['rc'] == 2
    assert 'commands: apply DOCUMENT, stats, stop' in refused['error']
    assert engines.call('m1', 'stop') == {'command': 'stop', 'rc': 0,
                                          'output': None}
    # The same process all along.
    assert engines.batches['m1'].proc.pid == pid


def test_a_gone_batch_is_told_and_stop_falls_back(engines, capsys):
    engines.call('m1', 'stats')
    batch = engines.batches['m1']
    netns.kill_proc(batch.proc)
    with pytest.raises(RuntimeError, match=r'dsr-l7 batch exited'):
        batch.call('stats', timeout=30)
    # Every later call is told too, at once.
    with pytest.raises(RuntimeError, match=r'dsr-l7 batch exited'):
        batch.call('stats', timeout=30)
    engines.stop(['m1'])
    err = capsys.readouterr().err
    assert 'dsr-l7 stop on m1: dsr-l7 batch exited' in err
    assert 'dsr-l7 stop on m1, on its own: rc 0' in err
    assert engines.batches == {}
    assert os.path.exists(batch.log_path)
