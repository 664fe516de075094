"""zuul.d's tempest job runs tempest the way `make test-tempest` does.

The gate job (zuul.d/jobs.yaml) and the local tempest stage
(tools/tempest/tempest_conf.py, tools/tempest/selection.py) must say the same
about the provider: the same feature flags, the same [load_balancer]
settings, the same tests included and excluded.  Octavia's provider list
in the job must be what tempest expects, with the description the DevStack
plugin gives the provider.
"""

import pathlib
import re

import yaml

from dsr_provider import flavors
from tools.tempest import selection
from tools.tempest import tempest_conf

ROOT = pathlib.Path(__file__).resolve().parents[1].parent
TEMPEST_SECTIONS = ('load_balancer', 'loadbalancer-feature-enabled',
                    'enforce_scope', 'dsr_scenario')


def _jobs():
    docs = yaml.safe_load((ROOT / 'zuul.d/jobs.yaml').read_text())
    return {d['job']['name']: d['job'] for d in docs if 'job' in d}


def _base_vars():
    return _jobs()['octavia-dsr-tempest-base']['vars']


def _plugin_description():
    settings = (ROOT / 'devstack/settings').read_text()
    m = re.search(r'^OCTAVIA_DSR_PROVIDER_DESCRIPTION=\$\{'
                  r'OCTAVIA_DSR_PROVIDER_DESCRIPTION:-"([^"]*)"\}', settings,
                  re.M)
    assert m, 'OCTAVIA_DSR_PROVIDER_DESCRIPTION not found in settings'
    return m.group(1)


def _as_conf(value):
    """A YAML scalar as it lands in tempest.conf (tempest_conf's
    spelling: lower-case booleans)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _expected():
    name = 'encapsulation'
    return tempest_conf.config(
        workspace='unused', auth_url='unused', admin_password='unused',
        provider_description=_plugin_description(),
        flavor_capability=(name, flavors.FLAVOR_METADATA[name]),
        az_capability=('se_group',
                       flavors.AVAILABILITY_ZONE_METADATA['se_group']))


def test_tempest_config_is_the_local_stage_one():
    job = _base_vars()['devstack_local_conf']['test-config'][
        '$TEMPEST_CONFIG']
    expected = _expected()
    for section in TEMPEST_SECTIONS:
        got = {k: _as_conf(v) for k, v in job[section].items()}
        assert got == expected[section], section


def test_feature_flags_cover_every_flag_tempest_conf_sets():
    job = _base_vars()['devstack_local_conf']['test-config'][
        '$TEMPEST_CONFIG']
    assert set(job['loadbalancer-feature-enabled']) == set(
        tempest_conf.FEATURES)


def test_same_tests_included_and_excluded():
    job = _base_vars()
    assert (job['tempest_test_regex'], job['tempest_exclude_regex']) == \
        selection.regexes('full')


def test_octavia_lists_what_tempest_expects():
    job = _base_vars()
    api = job['devstack_local_conf']['post-config']['$OCTAVIA_CONF'][
        'api_settings']
    tempest_lb = job['devstack_local_conf']['test-config'][
        '$TEMPEST_CONFIG']['load_balancer']
    assert api['enabled_provider_drivers'] == \
        tempest_lb['enabled_provider_drivers']
    assert api['enabled_provider_drivers'] == \
        f'dsr:{_plugin_description()}'
    assert api['default_provider_driver'] == tempest_lb['provider'] == 'dsr'


def test_job_runs_the_plugin_and_both_tempest_plugins():
    job = _base_vars()
    assert 'octavia-dsr' in job['devstack_plugins']
    assert set(job['tempest_plugins']) == {'octavia-tempest-plugin',
                                           'octavia-dsr'}
    assert job['devstack_localrc']['DSR_NODE'] == 'all'
    assert job['devstack_localrc']['OCTAVIA_DSR_SE_INTERFACE']
    # The entry point tempest loads the project's plugin by.
    setup_cfg = (ROOT / 'setup.cfg').read_text()
    assert re.search(r'^\s*dsr = dsr_provider\.tempest\.plugin:', setup_cfg,
                     re.M)


def test_project_runs_defined_jobs():
    jobs = _jobs()
    project = [d['project'] for d in yaml.safe_load(
        (ROOT / 'zuul.d/project.yaml').read_text()) if 'project' in d][0]
    for pipeline in ('check', 'gate'):
        for entry in project[pipeline]['jobs']:
            name = entry if isinstance(entry, str) else next(iter(entry))
            assert name in jobs, name
            assert not jobs[name].get('abstract'), name
