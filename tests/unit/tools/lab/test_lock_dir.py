"""tools/lab/lock_dir.py: a lab run outside a test session locks in a
folder of its own, never in the host's /run/octavia-dsr."""

import os
import subprocess
import sys
import textwrap

from amphora_agent import locks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))))


def run(code, env_lock_dir):
    env = dict(os.environ)
    env.pop(locks.LOCK_DIR_ENV, None)
    if env_lock_dir is not None:
        env[locks.LOCK_DIR_ENV] = env_lock_dir
    out = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                         cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


CODE = '''
    import os
    from amphora_agent import locks
    from tools.lab import lock_dir
    made = lock_dir.use_private('dsr-test-locks-')
    again = lock_dir.use_private('dsr-test-locks-')
    with locks.held('decap', '/nonexistent/pins'):
        print(made, again, locks.default_lock_dir(),
              len(os.listdir(locks.default_lock_dir())))
    if os.fork() == 0:   # a forked helper exiting through atexit
        raise SystemExit(0)
    os.wait()
    print(os.path.isdir(locks.default_lock_dir()))
'''


def test_unset_gets_a_private_folder_removed_at_exit():
    made, again, used, files, after_child = run(CODE, None)
    assert made != 'None' and os.path.basename(made).startswith(
        'dsr-test-locks-')
    assert used == made != locks.LOCK_DIR
    assert again == 'None', 'a second call keeps the folder of the first'
    assert int(files) >= 1, 'the lock file went to the private folder'
    assert after_child == 'True', 'a forked child removed the folder'
    assert not os.path.exists(made), 'left behind after the process exited'


def test_a_folder_already_set_is_kept(tmp_path):
    made, again, used, files, after_child = run(CODE, str(tmp_path))
    assert (made, again, used) == ('None', 'None', str(tmp_path))
    assert int(files) >= 1 and after_child == 'True'
    assert tmp_path.is_dir(), 'a folder this process did not make is kept'
