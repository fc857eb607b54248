"""Build script: the cffi extension (out-of-line API mode) is generated from native/."""
from setuptools import setup

setup(
    cffi_modules=[
        "native/build_ring.py:ffibuilder",
        "native/build_kernels.py:ffibuilder",
    ],
)
