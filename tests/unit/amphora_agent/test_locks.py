"""The tools' external locks: where their files go."""

import hashlib
import os

import pytest

from amphora_agent import locks


def _lock_files(folder):
    return sorted(os.listdir(folder))


def test_lock_file_goes_to_the_folder_named_by_the_environment(
        tmp_path, monkeypatch):
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(tmp_path))
    with locks.held('decap', '/sys/fs/bpf/some-pins'):
        files = _lock_files(tmp_path)
    name = hashlib.sha256(b'/sys/fs/bpf/some-pins').hexdigest()[:16]
    assert files == [f'decap-{name}']


def test_an_explicit_folder_wins_over_the_environment(tmp_path, monkeypatch):
    env_dir, given = tmp_path / 'env', tmp_path / 'given'
    env_dir.mkdir()
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(env_dir))
    with locks.held('member-setups', '/var/lib/octavia-dsr',
                    lock_dir=str(given)):
        pass
    assert _lock_files(env_dir) == []
    assert len(_lock_files(given)) == 1


def test_without_the_environment_the_host_folder_is_used(monkeypatch):
    monkeypatch.delenv(locks.LOCK_DIR_ENV, raising=False)
    assert locks.default_lock_dir() == '/run/octavia-dsr'
    monkeypatch.setenv(locks.LOCK_DIR_ENV, '')
    assert locks.default_lock_dir() == '/run/octavia-dsr'


@pytest.mark.parametrize('first, second, same', [
    ('/sys/fs/bpf/a', '/sys/fs/bpf/a/', True),
    ('/sys/fs/bpf/a', '/sys/fs/bpf/b', False),
])
def test_one_lock_file_per_resource(tmp_path, first, second, same):
    with locks.held('decap', first, lock_dir=str(tmp_path)):
        pass
    with locks.held('decap', second, lock_dir=str(tmp_path)):
        pass
    assert len(_lock_files(tmp_path)) == (1 if same else 2)


def test_the_test_session_keeps_the_host_folder_clean():
    # tests/conftest.py points every tool the suite starts at a folder of
    # the run: the suite must not fill the host's /run/octavia-dsr.
    assert os.environ.get(locks.LOCK_DIR_ENV)
    assert os.environ[locks.LOCK_DIR_ENV] != locks.LOCK_DIR
