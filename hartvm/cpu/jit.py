"""The decorator for every function of the hot loop.

``cache=True`` keeps compiled code on disk (see ``__init__`` for where).
``_nrt=False`` compiles without numba's reference-counting runtime: the
hot loop never allocates, and without it numba would wrap every array
passed between these small functions in atomic incref/decref calls, which
cost more than the instructions being emulated (measured on the integer
benchmarks before inlining: 8 MIPS with the runtime, 85 MIPS without).
"""

from numba import njit

jit = njit(cache=True, _nrt=False)

# The functions every instruction passes through are inlined into the loop at
# numba's level: numba does not inline one compiled function into another, so
# each call would pass every array's fields on the stack (measured: two such
# calls per instruction held the loop at ~85 MIPS; inlined, ~300 MIPS).
jit_inline = njit(cache=True, _nrt=False, inline="always")
