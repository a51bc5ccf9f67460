"""The decorator for every function of the hot loop.

``cache=True`` keeps compiled code on disk (see ``__init__`` for where).
``_nrt=False`` compiles without numba's reference-counting runtime: the
hot loop never allocates, and without it numba would wrap every array
passed between these small functions in atomic incref/decref calls, which
cost more than the instructions being emulated (measured: 8 MIPS with the
runtime, 85-98 MIPS without, on the integer benchmarks).
"""

from numba import njit

jit = njit(cache=True, _nrt=False)
