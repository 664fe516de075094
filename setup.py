# All metadata lives in setup.cfg; pbr adds the version (git), the
# requirements (requirements.txt) and the sdist file list (git).
import os
import sys

import setuptools

# setup.cfg's [global] commands names the build step for the dataplane's
# native parts (tools/build_native.py); pbr imports it by name, and a PEP 517
# backend does not put the source tree on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

setuptools.setup(
    setup_requires=['pbr>=7.0.3'],
    pbr=True)
