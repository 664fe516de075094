"""The local stack's octavia.conf holds the broker and database
credentials: it and the client files are written 0640, also over a file
that existed wider."""

import os
import stat

from tools.lab.localstack.octavia import OctaviaStack


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_config_and_client_files_are_0640(tmp_path):
    stack = OctaviaStack(tmp_path / 'octavia',
                         transport_url='rabbit://u:secret@127.0.0.1:5672/')
    stack.workdir.mkdir(parents=True)
    stack.api_url = 'http://127.0.0.1:9876'
    stack.neutron_url = 'http://127.0.0.1:9697'
    for path in (stack.conf_path, stack.openrc_path, stack.clouds_yaml_path):
        path.write_text('old\n')
        os.chmod(path, 0o644)
    stack._write_config()
    stack._write_openrc()
    assert 'secret' in stack.conf_path.read_text()
    for path in (stack.conf_path, stack.openrc_path, stack.clouds_yaml_path):
        assert _mode(path) == 0o640, path
