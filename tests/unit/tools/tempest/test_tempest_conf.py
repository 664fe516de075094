"""tempest.conf's feature flags at each tier."""

import configparser

from tools.tempest import tempest_conf


def _features(tier):
    return tempest_conf.config(workspace='/w', auth_url='http://ks',
                               admin_password='pw', tier=tier)[
        'loadbalancer-feature-enabled']


def test_tier1_is_layer_4():
    features = _features(1)
    assert features == tempest_conf.config(
        workspace='/w', auth_url='http://ks', admin_password='pw')[
        'loadbalancer-feature-enabled']
    assert features['l7_protocol_enabled'] == 'false'
    assert features['pool_algorithms_enabled'] == 'false'
    assert features['session_persistence_enabled'] == 'false'


def test_tier2_opens_l7_algorithms_and_persistence_not_tls():
    features = _features(2)
    assert features['l7_protocol_enabled'] == 'true'
    assert features['pool_algorithms_enabled'] == 'true'
    assert features['session_persistence_enabled'] == 'true'
    # TLS termination needs Barbican, which the gate does not run.
    assert features['terminated_tls_enabled'] == 'false'
    assert features['health_monitor_enabled'] == 'true'
    # The same flags are set at both tiers, only values differ.
    assert set(features) == set(_features(1))
    changed = {k for k in features if features[k] != _features(1)[k]}
    assert changed == {'l7_protocol_enabled', 'pool_algorithms_enabled',
                       'session_persistence_enabled'}


def test_written_file_reads_back(tmp_path):
    path = tmp_path / 'tempest.conf'
    tempest_conf.write(str(path), tempest_conf.config(
        workspace='/w', auth_url='http://ks', admin_password='pw', tier=2))
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(path)
    assert parser['loadbalancer-feature-enabled'].getboolean(
        'l7_protocol_enabled')
    assert parser['dsr_scenario']['enabled'] == 'false'


def test_the_request_timeout_is_tempests_unless_given(tmp_path):
    assert 'service-clients' not in tempest_conf.config(
        workspace='/w', auth_url='http://ks', admin_password='pw')
    path = tmp_path / 'tempest.conf'
    tempest_conf.write(str(path), tempest_conf.config(
        workspace='/w', auth_url='http://ks', admin_password='pw',
        http_timeout=180))
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(path)
    assert parser['service-clients'].getint('http_timeout') == 180
