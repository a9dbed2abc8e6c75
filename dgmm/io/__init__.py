"""Data in and out: stored sources, sinks, model files and checkpoints.

May import :mod:`dgmm.core` and :mod:`dgmm.errors`; never the fit layer, the
front ends or the package root.
"""
