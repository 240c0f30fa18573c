"""setup.py: hosts the optional cffi build of the C speedups (see _speedups/).

All metadata lives in pyproject.toml.  Until the C extension lands this only
defers to setuptools.
"""

from setuptools import setup

setup()
