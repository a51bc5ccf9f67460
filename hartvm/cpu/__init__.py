"""The RV64 hart: state layout, decoder, numba interpreter, CSRs and traps."""
