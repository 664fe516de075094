"""[dataplane] flood_guard_rate -> se_config.flood_rate of the real SE
object's maps (loaded, nothing attached), the way the agent opens its
dataplane (service.Agent._start_se_side; a reload goes through
set_flood_guard_rate, tests/unit/amphora_agent/test_service.py)."""

import secrets
import shutil

from oslo_config import cfg
import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent import opts
from tests.unit.amphora_agent.dataplane import se_object

pytestmark = se_object.NEEDS_SE_OBJECT

LIMITS = dp_mod.Limits(max_listeners=2, ring_size=251, max_reals=8,
                       max_nexthops=4, max_cidrs=4)


@pytest.fixture
def pin_dir():
    path = f'/sys/fs/bpf/octavia-dsr-test-{secrets.token_hex(4)}'
    yield path
    if dp_mod.Dataplane.is_pinned(path):
        dp_mod.Dataplane.open(path, create=False).destroy()
    shutil.rmtree(path, ignore_errors=True)


def conf_with(**overrides):
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    for name, value in overrides.items():
        conf.set_override(name, value, 'dataplane')
    conf([], project='octavia-dsr-test')
    return conf


def open_as_agent(pin_dir, conf):
    return dp_mod.Dataplane.open(
        pin_dir, limits=LIMITS,
        flood_guard_rate=conf.dataplane.flood_guard_rate)


def test_the_default_rate_is_written(pin_dir):
    with open_as_agent(pin_dir, conf_with()) as dp:
        assert dp.config().flood_rate == 125000


def test_a_configured_rate_replaces_the_live_one(pin_dir):
    with open_as_agent(pin_dir, conf_with(flood_guard_rate=0)) as dp:
        assert dp.config().flood_rate == 0
    with open_as_agent(pin_dir, conf_with(flood_guard_rate=7)) as dp:
        assert dp.config().flood_rate == 7
        ring_size = dp.config().ring_size
    # dsrctl opens without a rate: it leaves the live one (and the rest
    # of se_config) alone.
    with dp_mod.Dataplane.open(pin_dir, create=False) as dp:
        assert (dp.config().flood_rate, dp.config().ring_size) == (
            7, ring_size)


def test_the_option_is_mutable_and_bounded():
    opt = {o.name: o for o in opts.dataplane_opts}['flood_guard_rate']
    assert opt.mutable
    with pytest.raises(ValueError):
        conf_with(flood_guard_rate=-1)
