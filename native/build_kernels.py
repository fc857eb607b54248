"""cffi build script (API mode, out-of-line) for the hot kernels used by supervisor/.

Generates the extension ``supervisor._kernels`` from the C sources beside this file: the
decimal kernel (``mp_decimal``, the ring codec) and the order book (``mp_book``).
"""

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent

ffibuilder = cffi.FFI()
ffibuilder.cdef((HERE / "_kernels_cdefs.h").read_text())
ffibuilder.set_source(
    "supervisor._kernels",
    '#include "mp_decimal.h"\n#include "mp_book.h"',
    # relative: setuptools rejects absolute paths
    sources=["native/mp_decimal.c", "native/mp_book.c"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
