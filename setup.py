"""Build script: the cffi extensions (out-of-line API mode) are generated from native/."""
from setuptools import setup

setup(
    cffi_modules=[
        "native/build_ring.py:ffibuilder",
        "native/build_kernels.py:ffibuilder",
        "native/build_levels.py:ffibuilder",
    ],
)
