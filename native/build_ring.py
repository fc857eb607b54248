"""cffi build script (API mode, out-of-line): placeholder until the ring lands."""
import cffi

ffibuilder = cffi.FFI()
ffibuilder.cdef("int mp_ring_layout_version(void);")
ffibuilder.set_source("shm._native", "static int mp_ring_layout_version(void) { return 0; }")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
