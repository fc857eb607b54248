"""cffi build script for ``shm._native`` (API mode, out-of-line).

The declarations live in ``native/_cdefs.h`` and the C in ``native/*.c``; this script only
wires them together. setuptools runs it through ``cffi_modules`` in setup.py; running it
directly builds the extension in place for quick experiments.
"""
import os

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["mp_ring.c", "mp_ring_reader.c", "mp_ring_bench.c"]


def _relative(path: str) -> str:
    # setuptools wants source paths relative to the project root (the cwd of the build).
    return os.path.relpath(os.path.join(HERE, path))


ffibuilder = cffi.FFI()
with open(os.path.join(HERE, "_cdefs.h"), encoding="utf-8") as cdefs:
    ffibuilder.cdef(cdefs.read())

ffibuilder.set_source(
    "shm._native",
    '#include "mp_ring.h"',
    sources=[_relative(source) for source in SOURCES],
    include_dirs=[_relative(".")],
    depends=[_relative(name) for name in ("mp_ring.h", "mp_ring_internal.h", "_cdefs.h")],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
