"""cffi build script (API mode, out-of-line) for the analyzer's book kernel.

Generates the extension ``supervisor._levels`` from ``mp_levels.c``: float books applied
straight from the ring's int64 level records (see mp_levels.h).
"""

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent

ffibuilder = cffi.FFI()
ffibuilder.cdef((HERE / "_levels_cdefs.h").read_text())
ffibuilder.set_source(
    "supervisor._levels",
    '#include "mp_levels.h"',
    sources=["native/mp_levels.c"],  # relative: setuptools rejects absolute paths
    include_dirs=["native"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
