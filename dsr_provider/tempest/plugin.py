"""tempest.test_plugins entry point: registers [dsr_scenario] and the tests."""

import os

from tempest.test_discover import plugins

from dsr_provider.tempest import config as dsr_config


class DSRTempestPlugin(plugins.TempestPlugin):

    def load_tests(self):
        base_path = os.path.split(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))))[0]
        test_dir = os.path.join('dsr_provider', 'tempest', 'tests')
        return os.path.join(base_path, test_dir), base_path

    def register_opts(self, conf):
        conf.register_group(dsr_config.group)
        conf.register_opts(dsr_config.opts, group=dsr_config.group)

    def get_opt_lists(self):
        return [(dsr_config.group.name, dsr_config.opts)]
