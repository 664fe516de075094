"""setuptools commands that build and ship the dataplane's native parts.

pbr assembles the distribution; setup.cfg's ``[global] commands`` adds
these two for what Python packaging cannot build itself:

* ``build_py`` runs ``make build`` (clang: the BPF objects; cc:
  libmaglev.so, see Makefile and mk/maglev.mk) before it collects package
  data, so ``amphora_agent/dataplane/obj/`` exists when setup.cfg's
  ``[options.package_data]`` copies it into the wheel.  The installed
  package finds obj/ next to its own modules (dataplane/pins.py, maglev.py).
* ``bdist_wheel`` tags the wheel ``py3-none-<platform>``: it carries a native
  shared library loaded with ctypes (no Python C-API, hence no ABI tag) and
  must not claim to be pure Python.

Build host needs make, clang, cc and libbpf-dev (headers); the target host
only needs libbpf (libbpf.so.1) and a kernel with BPF.
"""
import os
import subprocess

from setuptools.command import build_py

try:  # setuptools >= 70.1 ships bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover - older setuptools
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BuildPy(build_py.build_py):
    """build_py that first compiles the BPF objects and libmaglev.so."""

    command_name = 'build_py'

    def run(self):
        # make rebuilds only what is out of date; an sdist has no obj/.
        subprocess.run(['make', '-C', SOURCE_ROOT, 'build'], check=True)
        # package data is globbed lazily: forget a listing taken before make.
        self.__dict__.pop('data_files', None)
        super().run()


class BdistWheel(_bdist_wheel):
    """A platform wheel for a ctypes library: py3-none-<platform>."""

    command_name = 'bdist_wheel'

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _python, _abi, plat = super().get_tag()
        return 'py3', 'none', plat
