from tools.lab import log_evidence as evidence

_REPORTER = '611 ERROR dsr_provider.controller.reporter [-] generation'
CTL = '\n'.join([
    '2026-12-07 01:17:30.001 611 INFO dsr_provider.controller.service [-] '
    'leader',
    f'2026-12-07 01:18:02.120 {_REPORTER} 86 of g-l7 not applied by every '
    'SE within 60.0 s',
    f'2026-12-07 01:18:40.500 {_REPORTER} 91 of g-l7 not applied by every '
    'SE within 60.0 s',
    '2026-12-07 01:19:00.000 611 WARNING dsr_provider.controller.guard '
    '[req-1 - - - -] auth: refused report_state from se_id=x',
    'Traceback (most recent call last):',
    # A traceback logged with its message: one record per line.
    f'2026-12-07 01:20:00.000 {_REPORTER} 99 of g-l7 not applied by every '
    'SE within 60.0 s',
    '2026-12-07 01:20:00.000 611 ERROR dsr_provider.controller.reporter '
    '[-] Traceback (most recent call last):',
    '2026-12-07 01:20:00.000 611 ERROR dsr_provider.controller.reporter '
    '[-]   File "reporter.py", line 1, in round', ''])


def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)


def test_the_product_logs_warnings_and_errors_are_counted_by_message(
        tmp_path):
    write(tmp_path, 'ctl1.log', CTL)
    write(tmp_path, 'l7_m1.log', '2026-12-07 01:18:01.000 700 ERROR '
          'amphora_agent.l7.agent [-] rejected L7 snapshot generation 86\n')
    write(tmp_path, 'se1.log', CTL.splitlines()[0] + '\n')
    # Not the product's: tempest's own and keystone's are left out.
    write(tmp_path, 'tempest.log', CTL)
    write(tmp_path, 'ks_keystone.log', CTL)
    found = evidence.product_problems(str(tmp_path))
    assert [name for name, _ in found] == ['ctl1.log', 'l7_m1.log']
    ctl = found[0][1]
    assert ctl == [
        ('2026-12-07 01:18:02.120', 'ERROR',
         'dsr_provider.controller.reporter',
         'generation 86 of g-l7 not applied by every SE within 60.0 s', 3),
        ('2026-12-07 01:19:00.000', 'WARNING',
         'dsr_provider.controller.guard',
         'auth: refused report_state from se_id=x', 1)]
    text = evidence.render(found)
    assert 'within 60.0 s (x3)' in text
    assert 'Traceback' not in text
    assert text.splitlines()[0].startswith('--- ctl1.log')


def test_errors_are_kept_before_warnings_when_there_are_too_many(tmp_path):
    lines = [f'2026-12-07 01:00:{i:02d}.000 1 WARNING m [-] warning {c}\n'
             for i, c in enumerate('abcdef')]
    lines.insert(3, '2026-12-07 01:00:59.000 1 ERROR m [-] the error\n')
    write(tmp_path, 'ctl1.log', ''.join(lines))
    rows = evidence.product_problems(str(tmp_path), per_file=3)[0][1]
    assert [r[3] for r in rows] == ['warning a', 'warning b', 'the error']


def test_no_folder_no_problems(tmp_path):
    assert evidence.product_problems(str(tmp_path / 'absent')) == []


def test_the_product_logs_anywhere_below_a_lab_folder(tmp_path):
    """An e2e lab's layout: controllers, SEs and L7 SEs at the top,
    octavia's processes below; its other logs left out."""
    (tmp_path / 'os').mkdir()
    write(tmp_path, 'ctl1.log', CTL)
    write(tmp_path, 'm1.log', '2026-12-07 01:18:01.000 700 WARNING '
          'amphora_agent.l7.agent [-] L7 SE not ready\n')
    write(tmp_path / 'os', 'octavia-driver-agent.log',
          '2026-12-07 01:18:01.000 701 ERROR octavia [-] child failed\n')
    write(tmp_path / 'os', 'octavia-api.log', CTL)
    write(tmp_path, 'exabgp.log', CTL)
    found = evidence.problems_under(str(tmp_path))
    assert [name for name, _ in found] == [
        'ctl1.log', 'm1.log', 'os/octavia-driver-agent.log']
    assert found[2][1][0][3] == 'child failed'
