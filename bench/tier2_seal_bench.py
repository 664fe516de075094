"""What the leader pays for believing only sealed L7 capabilities
(tier2.trusted_only, docs/security.md): one look at an L7 group of SES
sealed L7 SEs -- the enrolled keys read, each entry's seal checked --
against the enrolment-only filter it replaced, both on a real enrolment
table (SQLite in a temporary folder) and real Ed25519 keys.  Three cases
of the sealed look: every entry as read before (the signature already
checked: three looks of four, as the agents seal again once a second and
the watcher looks four times), every entry sealed again since the last
look (each signature checked), and a look as the watcher makes it over
time (one look in four after the agents sealed again).

    .venv/bin/python bench/tier2_seal_bench.py

DSR_BENCH_SES (16), DSR_BENCH_LOOKS (200 per round), DSR_BENCH_ROUNDS (5).
Prints the medians and, last, one JSON object.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from _common import finish  # noqa: E402
from _common import log  # noqa: E402
from dsr_provider.controller import db as db_mod  # noqa: E402
from dsr_provider.controller import enrolment  # noqa: E402
from dsr_provider.controller import tier2  # noqa: E402
from dsr_wire import auth  # noqa: E402
from dsr_wire import capability_seal  # noqa: E402

SES = int(os.environ.get('DSR_BENCH_SES', 16))
LOOKS = int(os.environ.get('DSR_BENCH_LOOKS', 200))
ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 5))
GROUP = 'edge-l7'


def caps(i):
    return {'role': 'tier2', 'ready': True, 'draining': False,
            'tunnel_addresses': {'4': f'198.18.7.{i + 1}'},
            'l7_contract': 2}


def enrolment_only(database):
    """The filter before seals: enrolled members, believed as read."""
    def members_of(live):
        ids = {row['se_id'] for row in enrolment.list_ses(database, GROUP)}
        return {k: v for k, v in live.items() if k in ids}
    return members_of


def per_look_ms(look, entries):
    """Median ms of one look over LOOKS looks; entries(n) is the group's
    entries for look n."""
    started = time.perf_counter()
    for n in range(LOOKS):
        look(entries(n))
    return (time.perf_counter() - started) / LOOKS * 1000


def main(out):
    with tempfile.TemporaryDirectory() as folder:
        url = f'sqlite:///{folder}/controller.db'
        db_mod.upgrade(url)
        database = db_mod.Database(url)
        sealers = []
        for i in range(SES):
            path = os.path.join(folder, f'se{i}.key')
            auth.generate_key(path)
            enrolment.enrol(database, GROUP, f'se{i}',
                            auth.load_private_key(path).public_key())
            sealers.append(capability_seal.Sealer(auth.Signer(path),
                                                  f'se{i}', GROUP))
        plain = {f'se{i}': caps(i) for i in range(SES)}
        # Sealed again before every look, or once every four looks.
        fresh = [{f'se{i}': s.seal(caps(i)) for i, s in enumerate(sealers)}
                 for _ in range(LOOKS)]
        current = {}
        before = enrolment_only(database)
        figures = {'enrolment_only': [], 'sealed_unchanged': [],
                   'sealed_each_look': [], 'sealed_one_in_four': []}
        try:
            for _ in range(ROUNDS):
                figures['enrolment_only'].append(
                    per_look_ms(before, lambda n: plain))
                for name, entries in (
                        ('sealed_unchanged', lambda n: fresh[0]),
                        ('sealed_each_look', lambda n: fresh[n]),
                        ('sealed_one_in_four', lambda n: fresh[n // 4])):
                    look = tier2.trusted_only(
                        database, lambda group: current['entries'])

                    def sealed(entries, look=look):
                        current['entries'] = entries
                        result = look(GROUP)
                        assert len(result) == SES, result
                        return result
                    figures[name].append(per_look_ms(sealed, entries))
        finally:
            database.engine.dispose()
    base = statistics.median(figures['enrolment_only'])
    for name, values in figures.items():
        value = statistics.median(values)
        log(f'{SES} L7 SEs, one look, {name}: {value:.3f} ms '
            f'(x {value / base:.2f} of enrolment only)')
        out[name] = {'ms': round(value, 3), 'ratio': round(value / base, 2)}
    out.update(ses=SES, looks=LOOKS, rounds=ROUNDS)


if __name__ == '__main__':
    t0 = time.monotonic()
    result = {'bench': 'tier2_seal_bench', 'targets': {}}
    try:
        main(result)
        error = None
    except BaseException as exc:  # noqa: BLE001 -- recorded by finish()
        error = exc
    sys.exit(finish(result, t0, error))
