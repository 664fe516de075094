"""amphora_agent.l7.cli: dsr-l7's commands and its batch mode (the
boundary: an engine that records what it is asked; the real engine under
batch is tests/functional/amphora_agent/l7, whose labs drive their L7 SEs
through ``dsr-l7 batch``)."""

import io
import json
import subprocess
import sys

from amphora_agent.l7 import cli
from dsr_wire.schema import Invalid


class Engine:
    """What the CLI calls on an engine, answering from a script."""

    def __init__(self):
        self.calls = []
        self.generation = None
        self.ready = False
        self.host = type('Host', (), {'tunnel_addresses': {4: '198.19.1.2'}})

    def apply(self, document):
        self.calls.append(('apply', document['generation']))
        if document.get('invalid'):
            raise Invalid('load_balancers: required')
        if document.get('boom'):
            raise OSError('disk full')
        self.generation = document['generation']
        status = document.get('status', 'ACTIVE')
        return {'lb1': {'status': status, 'error': None}}

    def adopt(self):
        self.calls.append(('adopt',))

    def stats(self):
        self.calls.append(('stats',))
        return {'lb1': {'listeners': {}}}

    def stop(self):
        self.calls.append(('stop',))
        return ['removed 192.0.2.10 from lo']


def doc(tmp_path, generation, **extra):
    path = tmp_path / f'doc-{generation}.json'
    path.write_text(json.dumps({'generation': generation, **extra}))
    return str(path)


def run_batch(engine, lines):
    out = io.StringIO()
    rc = cli.batch(engine, lines, out=out)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


def test_batch_runs_each_line_on_one_engine(tmp_path, capsys):
    engine = Engine()
    rc, answers = run_batch(engine, [
        f'apply {doc(tmp_path, 1)}\n', '\n', '# a comment\n', 'stats\n',
        f'apply {doc(tmp_path, 2)}  # the next generation\n', 'stop\n'])
    assert rc == 0
    assert [a['command'].split()[0] for a in answers] == [
        'apply', 'stats', 'apply', 'stop']
    assert [a['rc'] for a in answers] == [0, 0, 0, 0]
    assert answers[0]['output']['generation'] == 1
    assert answers[0]['output']['load_balancers']['lb1']['status'] == \
        'ACTIVE'
    assert answers[0]['output']['tunnel_addresses'] == {'4': '198.19.1.2'}
    assert answers[1]['output'] == {'lb1': {'listeners': {}}}
    assert answers[2]['output']['generation'] == 2
    assert answers[3]['output'] is None
    # One engine: the second apply sees what the first left.
    assert engine.calls == [('apply', 1), ('adopt',), ('stats',),
                            ('apply', 2), ('adopt',), ('stop',)]
    # stop's clean-up lines go to stderr, never into the answers.
    assert 'removed 192.0.2.10 from lo' in capsys.readouterr().err


def test_a_bad_line_is_refused_alone_and_names_the_commands(tmp_path):
    engine = Engine()
    rc, answers = run_batch(engine, [
        'frobnicate\n', 'apply\n', 'stats --help\n', 'stats "x\n',
        'serve doc.json\n', 'stats\n'])
    assert [a['rc'] for a in answers] == [2, 2, 2, 2, 2, 0]
    for answer in answers[:5]:
        assert 'output' not in answer
        assert 'commands: apply DOCUMENT, stats, stop' in answer['error']
    assert "invalid choice: 'frobnicate'" in answers[0]['error']
    assert 'document' in answers[1]['error']
    assert "invalid choice: 'serve'" in answers[4]['error']
    assert answers[3]['command'] == 'stats "x'
    assert rc == 2
    assert engine.calls == [('adopt',), ('stats',)]


def test_a_failing_command_is_told_and_the_batch_goes_on(tmp_path):
    engine = Engine()
    rc, answers = run_batch(engine, [
        f'apply {doc(tmp_path, 1, boom=True)}\n',
        f'apply {tmp_path}/missing.json\n',
        f'apply {doc(tmp_path, 2, invalid=True)}\n',
        f'apply {doc(tmp_path, 3, status="ERROR")}\n',
        'stats\n'])
    assert [a['rc'] for a in answers] == [1, 1, 2, 1, 0]
    assert answers[0]['error'] == 'OSError: disk full'
    assert answers[1]['error'].startswith('FileNotFoundError')
    # What the command alone prints: the refusal, the ERROR result.
    assert list(answers[2]['output']) == ['refused']
    assert 'load_balancers: required' in answers[2]['output']['refused']
    assert answers[3]['output']['load_balancers']['lb1']['status'] == \
        'ERROR'
    assert rc == 2


def test_building_the_engine_leaves_octavia_unimported(tmp_path):
    # stop and stats never fetch a certificate: the store (Octavia's
    # configuration, seconds of imports) is built on the first fetch.
    conf = tmp_path / 'l7.conf'
    conf.write_text(f'[l7]\nstate_dir = {tmp_path}/state\n'
                    'cert_manager = local_cert_manager\n')
    code = ('import sys\n'
            'from amphora_agent.l7 import cli\n'
            f'cli.build_engine([{str(conf)!r}], "m1")\n'
            'print(sorted(m for m in sys.modules'
            ' if m.startswith("octavia")))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout
