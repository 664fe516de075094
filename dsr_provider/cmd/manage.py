"""dsr-manage: key material and SE enrolment (docs/security.md).

    dsr-manage gen-key --private-key FILE [--public-key FILE]
    dsr-manage --config-file dsr-controller.conf enrol-se \
        --se-group G --se-id S --public-key FILE
    dsr-manage --config-file ... revoke-se --se-id S
    dsr-manage --config-file ... list-ses [--se-group G]
    dsr-manage --config-file ... rotate-controller-key \
        {prepare,activate,retire} --public-dir DIR

The database and the controller key are the dsr-controller's own options
([dsr_controller] database_connection, signing_key).
"""

import json
import os
import sys

from oslo_config import cfg

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider import opts
from dsr_wire import auth


def _database(conf):
    url = conf.dsr_controller.database_connection
    db_mod.upgrade(url)
    return db_mod.Database(url)


def gen_key(conf):
    c = conf.command
    kid = auth.generate_key(c.private_key, c.public_key)
    print(f'key {kid}: private {c.private_key} (0600)'
          + (f', public {c.public_key}' if c.public_key else ''))
    return 0


def enrol_se(conf):
    c = conf.command
    key = auth.load_public_key(c.public_key)
    kid = enrolment.enrol(_database(conf), c.se_group, c.se_id, key)
    print(f'SE {c.se_id} enrolled in group {c.se_group} with key {kid}')
    return 0


def revoke_se(conf):
    c = conf.command
    if not enrolment.revoke(_database(conf), c.se_id):
        print(f'SE {c.se_id} is not enrolled', file=sys.stderr)
        return 1
    print(f'SE {c.se_id} revoked: its messages are refused from now on')
    return 0


def list_ses(conf):
    rows = enrolment.list_ses(_database(conf), conf.command.se_group)
    if conf.command.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f'{r["se_group"]:<24} {r["se_id"]:<40} {r["key_id"]}')
    return 0


def rotate_controller_key(conf):
    """prepare: a new key next to the signing key, its public key into the
    agents' trusted directory (distribute it to every SE); activate: the
    controllers sign with it (they re-read the file, no restart); retire:
    the old public key leaves the trusted directory."""
    key = conf.dsr_controller.signing_key
    nxt, old = key + '.next', key + '.old'
    public_dir = conf.command.public_dir
    step = conf.command.step
    if step == 'prepare':
        kid = auth.generate_key(nxt)
        auth.write_public_key(os.path.join(public_dir, f'{kid}.pub'),
                              auth.load_private_key(nxt).public_key())
        print(f'new key {kid}: {nxt}; {public_dir}/{kid}.pub trusted by '
              f'the agents once distributed; then run "activate"')
    elif step == 'activate':
        if not os.path.exists(nxt):
            print(f'{nxt} missing: run "prepare" first', file=sys.stderr)
            return 1
        auth.load_private_key(nxt)          # refuses an insecure file
        os.replace(key, old)
        os.replace(nxt, key)
        kid = auth.key_id(auth.load_private_key(key).public_key())
        print(f'signing with {kid}; the old key is {old}; run "retire" '
              f'once every controller logged the switch')
    elif step == 'retire':
        if not os.path.exists(old):
            print(f'{old} missing: nothing to retire', file=sys.stderr)
            return 1
        kid = auth.key_id(auth.load_private_key(old).public_key())
        # Whatever the file is called: the key id decides.
        for name in os.listdir(public_dir):
            path = os.path.join(public_dir, name)
            if name.endswith('.pub') and auth.key_id(
                    auth.load_public_key(path)) == kid:
                os.unlink(path)
        os.unlink(old)
        print(f'key {kid} retired: agents stop trusting it when '
              f'{public_dir} is distributed')
    return 0


def _add_parsers(subparsers):
    p = subparsers.add_parser('gen-key', help='new Ed25519 key pair')
    p.add_argument('--private-key', required=True)
    p.add_argument('--public-key')
    p.set_defaults(func=gen_key)
    p = subparsers.add_parser('enrol-se', help='enrol an SE\'s public key')
    p.add_argument('--se-group', required=True)
    p.add_argument('--se-id', required=True)
    p.add_argument('--public-key', required=True)
    p.set_defaults(func=enrol_se)
    p = subparsers.add_parser('revoke-se', help='revoke an SE')
    p.add_argument('--se-id', required=True)
    p.set_defaults(func=revoke_se)
    p = subparsers.add_parser('list-ses', help='enrolled SEs')
    p.add_argument('--se-group')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=list_ses)
    p = subparsers.add_parser('rotate-controller-key',
                              help='prepare / activate / retire a key')
    p.add_argument('step', choices=['prepare', 'activate', 'retire'])
    p.add_argument('--public-dir', required=True,
                   help='the agents\' [auth] controller_keys_dir')
    p.set_defaults(func=rotate_controller_key)


def main(argv=None):
    conf = cfg.ConfigOpts()
    opts.register_controller_opts(conf)
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', handler=_add_parsers, title='commands'))
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-manage', default_config_files=[])
    try:
        return conf.command.func(conf)
    except (OSError, ValueError, auth.InsecureKeyFile) as exc:
        print(f'dsr-manage: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
