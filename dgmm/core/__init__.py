"""The numeric core: numpy and scipy only (plus :mod:`dgmm.errors`).

The model-family interface the engine runs on (:mod:`dgmm.core.family`) and
the Gaussian family behind it (:mod:`dgmm.core.gaussian`): covariance types,
parameters, sufficient statistics, the per-block kernels, the initialisation's row sample
and the M-step with its re-seed policy. Nothing here knows
about Dask, storage or scikit-learn; a test imports it in a fresh interpreter
and checks that none of them is loaded.
"""
