"""Where and how a fit runs: the cluster, initialisation, the EM loop,
resume from checkpoints, the driver (spec in, result out) and prediction.

May import :mod:`dgmm.graph`, :mod:`dgmm.io` and :mod:`dgmm.core`.
"""
