"""Figures of a fitted mixture: the convergence curve and a 2-D view with ellipses.

Matplotlib is optional (``pip install 'dgmm[plot]'``) and imported only when
a figure is drawn. Figures are built without pyplot, on the Agg canvas, so
drawing one changes no global state and needs no display.

The 2-D view projects onto the two leading principal axes P (2, D), about a
centre c, of the data sample (or, without data, of the mixture's own
covariance ``sum_k w_k (Sigma_k + (mu_k - mu)(mu_k - mu)^T)``). A component
then projects to mean ``P (mu_k - c)`` and covariance ``P Sigma_k P^T``, for
every covariance type; its n-sigma ellipse has semi-axes ``n sqrt(lambda)``
along the eigenvectors of that 2x2 matrix. A model of one feature has no
second axis: its view is the component densities ``w_k N(x; mu_k, sigma_k^2)``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dgmm.core.kernels import estimate_log_prob_resp
from dgmm.core.lowrank import DEFAULT_DENSE_BYTES, LowRankParams, dense_covariances
from dgmm.core.params import GMMParams
from dgmm.errors import (
    InvalidOptionError,
    OptionalDependencyError,
    ShapeMismatchError,
    TargetFormatError,
    UnsupportedInputError,
)

__all__ = ["ellipse_geometry", "parse_image_shape", "plot_components", "plot_fit", "plot_selection",
           "plot_top_features", "principal_axes", "project_components", "top_features"]

FIGSIZE = (11.0, 4.5)
DPI = 100
# Points drawn in the scatter at most (a sample larger than this is thinned).
MAX_POINTS = 20_000


def _matplotlib() -> Any:
    """The matplotlib modules used here, or OptionalDependencyError saying how to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse
    except ImportError as exc:
        raise OptionalDependencyError(
            f"Plotting needs matplotlib, which could not be imported ({exc}). "
            "Install it with: pip install 'dgmm[plot]' (or pip install matplotlib)."
        ) from None
    return Figure, FigureCanvasAgg, Ellipse


def principal_axes(
    X_sample: np.ndarray | None = None, params: GMMParams | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two leading principal axes of a data sample, or of a mixture.

    Parameters
    ----------
    X_sample : ndarray of shape (n_samples, n_features), default=None
    params : GMMParams, default=None
        Used when ``X_sample`` is None: the axes of the mixture's covariance.

    Returns
    -------
    axes : ndarray of shape (min(2, n_features), n_features)
        Orthonormal rows, largest variance first; each row's largest entry
        is positive (a deterministic sign).
    center : ndarray of shape (n_features,)
    variances : ndarray of shape (min(2, n_features),)
        Variance along each axis.
    """
    if X_sample is not None:
        center = X_sample.mean(axis=0)
        covariance = np.atleast_2d(np.cov(X_sample - center, rowvar=False))
    elif params is not None:
        w, means = params.weights, params.means
        center = w @ means
        spread = means - center
        covariance = (spread.T * w) @ spread + _weighted_covariance(params)
    else:
        raise InvalidOptionError("principal_axes needs X_sample or params; both were None.")
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][: min(2, covariance.shape[0])]
    axes = vectors[:, order].T
    signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
    return axes * signs[:, None], center, np.maximum(values[order], 0.0)


def _weighted_covariance(params: GMMParams) -> np.ndarray:
    """``sum_k w_k Sigma_k`` as a (D, D) matrix."""
    return params.model.weighted_covariance(params.weights, params.covariances, params.n_features)


def project_components(
    params: GMMParams, axes: np.ndarray, center: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every component's mean and covariance seen on ``axes``.

    Parameters
    ----------
    params : GMMParams
    axes : ndarray of shape (n_axes, n_features)
    center : ndarray of shape (n_features,)

    Returns
    -------
    means : ndarray of shape (n_components, n_axes)
        ``P (mu_k - c)``.
    covariances : ndarray of shape (n_components, n_axes, n_axes)
        ``P Sigma_k P^T``, without forming any (D, D) matrix for diag or
        spherical covariances.
    """
    means = (params.means - center) @ axes.T
    return means, params.model.project(params.covariances, axes, params.n_components)


def ellipse_geometry(covariance: np.ndarray, n_sigma: float = 1.0) -> tuple[float, float, float]:
    """``(width, height, angle in degrees)`` of the n-sigma ellipse of a 2x2 covariance.

    ``width`` is the full length of the major axis (``2 n sqrt(lambda_max)``),
    ``angle`` its direction counter-clockwise from the x axis, in (-90, 90].
    """
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, 0.0)
    major = vectors[:, 1]
    angle = float(np.degrees(np.arctan2(major[1], major[0])))
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    return (
        float(2.0 * n_sigma * np.sqrt(values[1])),
        float(2.0 * n_sigma * np.sqrt(values[0])),
        angle,
    )


def _model_params(model: Any) -> GMMParams:
    """GMMParams of a fitted dgmm (or scikit-learn) GaussianMixture."""
    if isinstance(model, GMMParams):
        return model
    if hasattr(model, "feature_log_prob_"):
        raise UnsupportedInputError(
            f"plot_fit draws Gaussian mixtures; got a mixture of multinomials "
            f"({type(model).__name__}), which has word distributions, not means and "
            "covariances. Use dgmm.plot.plot_top_features(model) for it."
        )
    if isinstance(getattr(type(model), "params_", None), property):
        params = model.params_  # a dgmm GaussianMixture (NotFittedError before fit)
        if isinstance(params, LowRankParams):
            # The 2-D view needs covariances: dense, for a small n_features only
            # (DenseCovarianceTooLargeError says to use plot_components otherwise).
            return GMMParams.from_covariances(
                params.weights, params.means, dense_covariances(params, DEFAULT_DENSE_BYTES), "full"
            )
        return params
    try:
        return GMMParams(
            np.asarray(model.weights_, dtype=np.float64),
            np.asarray(model.means_, dtype=np.float64),
            np.asarray(model.covariances_, dtype=np.float64),
            np.asarray(model.precisions_cholesky_, dtype=np.float64),
            str(model.covariance_type),
        )
    except AttributeError:
        raise UnsupportedInputError(
            f"plot_fit expects a fitted GaussianMixture, got {type(model).__name__} without "
            "fitted parameters (weights_, means_, covariances_). Fit it, or load one with "
            "dgmm.load(path)."
        ) from None


def _as_sample(X_sample: Any, n_features: int) -> np.ndarray | None:
    """The data sample as a finite float64 (n, D) array (Dask input computed)."""
    if X_sample is None:
        return None
    if hasattr(X_sample, "compute"):
        X_sample = X_sample.compute()
    x = np.asarray(X_sample, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        from dgmm.errors import ShapeMismatchError

        raise ShapeMismatchError(
            f"X_sample has shape {x.shape}, but the model has {n_features} features; expected "
            f"(n_samples, {n_features}). Pass rows of the data the model was fitted on."
        )
    x = x[np.all(np.isfinite(x), axis=1)]
    return x if len(x) else None


def plot_fit(
    model: Any,
    X_sample: Any = None,
    *,
    path: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    n_sigmas: tuple[float, ...] = (1.0, 2.0),
) -> Any:
    """Plot a fitted mixture: convergence curve and principal-axes view.

    Parameters
    ----------
    model : GaussianMixture
        A fitted dgmm (or scikit-learn) Gaussian mixture, e.g. from
        :func:`dgmm.load`.
    X_sample : array-like of shape (n_samples, n_features), default=None
        Rows of the data (a sample: at most 20 000 are drawn). They are
        scattered, coloured by predicted component, and define the principal
        axes; without them the axes are the mixture's own.
    path : str or path-like, default=None
        Also write the figure there (format from the suffix, PNG by
        default); local path or fsspec URL, written whole or not at all.
    storage_options : mapping, default=None
        fsspec options for a remote ``path``.
    n_sigmas : tuple of float, default=(1.0, 2.0)
        The ellipses drawn around each component's mean.

    Returns
    -------
    figure : matplotlib.figure.Figure
        Left: ``lower_bounds_`` per iteration, re-seed events marked. Right:
        the 2-D view with each component's ellipses and means (with a single
        feature: the sample's histogram and each component's weighted
        density).

    Raises
    ------
    dgmm.errors.OptionalDependencyError
        If matplotlib is not installed.
    """
    params = _model_params(model)
    sample = _as_sample(X_sample, params.n_features)
    figure, curve, view, Ellipse = _curve_and_view(wspace=0.22)
    _plot_convergence(curve, model)
    _plot_view(view, params, sample, n_sigmas, Ellipse)
    if path is not None:
        _save(figure, path, storage_options)
    return figure


def plot_selection(
    selection: Any,
    X_sample: Any = None,
    *,
    path: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    n_sigmas: tuple[float, ...] = (1.0, 2.0),
) -> Any:
    """Plot a model selection: the criterion against n_components beside the best model.

    Parameters
    ----------
    selection : dgmm.selection.SelectionResult
        What :func:`dgmm.select` returned (or ``SelectionResult.load``).
    X_sample : array-like of shape (n_samples, n_features), default=None
        Rows of the data, scattered in the best model's view (as :func:`plot_fit`).
    path : str or path-like, default=None
        Also write the figure there (PNG, SVG or PDF by the suffix).
    storage_options : mapping, default=None
    n_sigmas : tuple of float, default=(1.0, 2.0)

    Returns
    -------
    figure : matplotlib.figure.Figure
        Left: BIC, AIC or held-out log-likelihood per n_components, one line
        per covariance type, the best circled. Right: the best model's
        components (the 2-D view of :func:`plot_fit`).
    """
    figure, curve, view, Ellipse = _curve_and_view(wspace=0.25)
    score = selection.criterion
    label = {"bic": "BIC (lower is better)", "aic": "AIC (lower is better)",
             "validation": "held-out mean log-likelihood (higher is better)"}[score]
    types = list(dict.fromkeys(c.covariance_type for c in selection.candidates))
    for i, t in enumerate(types):
        rows = [c for c in selection.candidates if c.covariance_type == t and np.isfinite(getattr(c, score))]
        curve.plot([c.n_components for c in rows], [getattr(c, score) for c in rows],
                   marker="o", markersize=3, linewidth=1.2, color=f"C{i % 10}", label=t)
    best = selection.best_index_
    if best is not None:
        c = selection.candidates[best]
        curve.plot([c.n_components], [getattr(c, score)], marker="o", markersize=12, fillstyle="none",
                   color="black", linewidth=0, label=f"best: K={c.n_components} {c.covariance_type}")
        sample = _as_sample(X_sample, selection.best_estimator_.n_features_in_)
        _plot_view(view, _model_params(selection.best_estimator_), sample, n_sigmas, Ellipse)
    else:
        view.text(0.5, 0.5, "every candidate failed", ha="center", va="center", transform=view.transAxes)
    curve.set_title(f"Model selection ({score})")
    curve.set_xlabel("n_components")
    curve.set_ylabel(label)
    curve.xaxis.get_major_locator().set_params(integer=True)
    curve.legend(fontsize=8)
    if path is not None:
        _save(figure, path, storage_options)
    return figure


def _curve_and_view(wspace: float) -> tuple[Any, Any, Any, Any]:
    """A figure of two panels, a curve (left) and a 2-D view (right): ``(figure, curve, view, Ellipse)``."""
    Figure, FigureCanvasAgg, Ellipse = _matplotlib()
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    # Fixed margins: constrained layout would double the time to render.
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.92, wspace=wspace)
    curve, view = figure.subplots(1, 2, width_ratios=(1.0, 1.2))
    return figure, curve, view, Ellipse


def _plot_convergence(ax: Any, model: Any) -> None:
    """Lower bound per iteration; vertical marks where components were re-seeded."""
    history = list(getattr(model, "history_", []) or [])
    bounds = list(getattr(model, "lower_bounds_", []) or [])
    if history:
        iterations = [int(h.get("iteration", i + 1)) for i, h in enumerate(history)]
        bounds = [float(h.get("lower_bound", np.nan)) for h in history]
    else:
        iterations = list(range(1, len(bounds) + 1))
    ax.set_title("Convergence")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood per sample")
    if not bounds:
        ax.text(0.5, 0.5, "no fit history", ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(iterations, bounds, marker="o", markersize=3, linewidth=1.2, label="lower bound")
    ax.xaxis.get_major_locator().set_params(integer=True)
    reseeds = [
        (it, sum(e.get("event") == "reseed" for e in h.get("events", [])))
        for it, h in zip(iterations, history)
    ]
    first = True
    for it, count in reseeds:
        if count:
            ax.axvline(it, color="tab:red", linestyle="--", linewidth=0.9,
                       label="re-seed" if first else None)
            first = False
    converged = getattr(model, "converged_", None)
    if converged is not None:
        ax.text(0.98, 0.04, f"{'converged' if converged else 'not converged'} after "
                f"{iterations[-1]} iterations", ha="right", va="bottom",
                transform=ax.transAxes, fontsize=8)
    if len(bounds) > 2 and np.all(np.isfinite(bounds)):
        # The first iteration often sits far below the rest: keep the tail readable.
        low, high = min(bounds[1:]), max(bounds[1:])
        pad = 0.1 * (high - low) or 1e-3 * max(abs(high), 1.0)
        if bounds[0] < low - 10 * pad:
            ax.set_ylim(low - pad, high + pad)
            ax.annotate(f"iteration {iterations[0]}: {bounds[0]:.4g} (off scale)",
                        (0.02, 0.96), xycoords="axes fraction", fontsize=8, va="top")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.1), fontsize=8)


def _plot_view(
    ax: Any,
    params: GMMParams,
    sample: np.ndarray | None,
    n_sigmas: tuple[float, ...],
    Ellipse: Any,
) -> None:
    """Sample and components on the two leading principal axes."""
    colors = [f"C{k % 10}" for k in range(params.n_components)]
    if params.n_features == 1:
        _plot_density(ax, params, sample, colors)
        return
    axes, center, variances = principal_axes(sample, params)
    means, covariances = project_components(params, axes, center)
    if sample is not None:
        rng = np.random.default_rng(0)
        shown = sample if len(sample) <= MAX_POINTS else sample[
            np.sort(rng.choice(len(sample), MAX_POINTS, replace=False))
        ]
        # From the parameters, not model.predict: no feature-name checks on a bare sample.
        labels = estimate_log_prob_resp(shown, params)[1].argmax(axis=1)
        xy = (shown - center) @ axes.T
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.35, linewidths=0,
                   c=[colors[int(k)] for k in labels], rasterized=True)
    for k in range(params.n_components):
        for n_sigma in n_sigmas:
            width, height, angle = ellipse_geometry(covariances[k], n_sigma)
            ax.add_patch(Ellipse(tuple(means[k]), width, height, angle=angle, fill=False,
                                 edgecolor=colors[k], linewidth=1.4 if n_sigma == n_sigmas[0] else 0.8,
                                 linestyle="-" if n_sigma == n_sigmas[0] else "--"))
        ax.plot(*means[k], marker="x", color="black", markersize=6)
        ax.annotate(str(k), means[k], textcoords="offset points", xytext=(4, 4), fontsize=8)
    extent = [np.abs(means).max(axis=0) if len(means) else np.zeros(2)]
    for k in range(params.n_components):
        extent.append(np.abs(means[k]) + max(n_sigmas) * np.sqrt(np.diag(covariances[k])))
    if sample is not None:
        extent.append(np.percentile(np.abs((sample - center) @ axes.T), 99.5, axis=0))
    limit = np.max(extent, axis=0) * 1.05 + 1e-12
    ax.set_xlim(-limit[0], limit[0])
    ax.set_ylim(-limit[1], limit[1])
    ax.set_aspect("equal", adjustable="box")  # ellipses keep their true shape
    total = variances.sum() or 1.0
    source = "data sample" if sample is not None else "model"
    ax.set_title(f"{params.n_components} components ({params.covariance_type}), "
                 f"principal axes of the {source}")
    ax.set_xlabel(f"axis 1 ({variances[0]:.3g} variance)")
    ax.set_ylabel(f"axis 2 ({variances[1]:.3g} variance)" if total else "axis 2")
    ax.text(0.02, 0.02, " / ".join(f"{s:g}" for s in n_sigmas) + " sigma ellipses",
            transform=ax.transAxes, fontsize=8, va="bottom")


def _plot_density(ax: Any, params: GMMParams, sample: np.ndarray | None, colors: list[str]) -> None:
    """One feature: the sample's histogram and each component's weighted density."""
    means = params.means[:, 0]
    stds = np.sqrt(project_components(params, np.ones((1, 1)), np.zeros(1))[1][:, 0, 0])
    low, high = float(np.min(means - 4 * stds)), float(np.max(means + 4 * stds))
    if sample is not None:
        low, high = min(low, float(sample.min())), max(high, float(sample.max()))
        ax.hist(sample[:, 0], bins=60, density=True, color="0.75", label="data sample")
    x = np.linspace(low, high, 600)
    densities = params.weights[:, None] * np.exp(-0.5 * ((x - means[:, None]) / stds[:, None]) ** 2) / (
        np.sqrt(2 * np.pi) * stds[:, None]
    )
    for k in range(params.n_components):
        ax.plot(x, densities[k], color=colors[k], linewidth=1.2, label=f"component {k}")
    ax.plot(x, densities.sum(axis=0), color="black", linewidth=1.0, linestyle="--", label="mixture")
    ax.set_title(f"{params.n_components} components, one feature")
    ax.set_xlabel("feature 0")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper right")


def _save(figure: Any, path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None) -> None:
    """Render once, then write the bytes whole (``dgmm.io.fs.replace_file``)."""
    from dgmm.io import fs as fsio

    target = os.fspath(path)
    suffix = os.path.splitext(target)[1].lstrip(".").lower() or "png"
    supported = figure.canvas.get_supported_filetypes()
    if suffix not in supported:
        raise TargetFormatError(
            f"Cannot tell the figure format from {target!r}: {suffix!r} is not one of "
            f"{', '.join(sorted(supported))}. Use a path ending in .png, .svg or .pdf."
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format=suffix, dpi=DPI)
    fsio.replace_file(fsio.resolve(target, storage_options), buffer.getvalue(), what="the figure")


# -- components as images ------------------------------------------------------------


def parse_image_shape(text: str, n_features: int) -> tuple[int, ...]:
    """``"H,W"`` or ``"H,W,C"`` as a shape whose product is ``n_features``."""
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or any(v < 1 for v in shape):
        raise InvalidOptionError(
            f"image shape must be H,W or H,W,C with positive integers (e.g. 64,64,3); got "
            f"{text!r}. Pass the shape the features were flattened from."
        )
    if int(np.prod(shape)) != n_features:
        raise ShapeMismatchError(
            f"image shape {text!r} holds {int(np.prod(shape))} values, but the model has "
            f"{n_features} features; expected a shape whose product is {n_features}."
        )
    return shape


def _to_image(values: np.ndarray, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    image = np.clip((values - low) / max(high - low, 1e-300), 0.0, 1.0).reshape(shape)
    return image if len(shape) == 2 or shape[2] in (3, 4) else image.mean(axis=2)


def plot_components(
    model: Any,
    image_shape: tuple[int, ...] | str,
    *,
    n_components: int = 16,
    n_factors: int = 3,
    path: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """A grid of component means as images, heaviest first, with their factor directions.

    Row k shows ``mu_k`` and, for a low-rank model, ``mu_k + A_k^(j)`` and
    ``mu_k - A_k^(j)`` for its first ``n_factors`` factors (the columns of
    ``factors_``); other covariance types show the means alone. Every image
    shares one grey/colour scale (the range of everything shown).

    Parameters
    ----------
    model : GaussianMixture
        A fitted dgmm mixture, e.g. from :func:`dgmm.load`.
    image_shape : tuple of int or str
        ``(H, W)`` or ``(H, W, C)`` (or ``"64,64,3"``), product n_features.
    n_components : int, default=16
        Components shown at most (the heaviest).
    n_factors : int, default=3
        Factors shown per component at most.
    path : str or path-like, default=None
        Also write the figure there (as :func:`plot_fit`).
    storage_options : mapping, default=None

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    Figure, FigureCanvasAgg, _ = _matplotlib()
    params = model.params_ if isinstance(getattr(type(model), "params_", None), property) else model
    shape = parse_image_shape(image_shape, params.n_features) if isinstance(image_shape, str) else (
        parse_image_shape(",".join(map(str, image_shape)), params.n_features)
    )
    order = np.argsort(-params.weights, kind="stable")[:n_components]
    factors = params.factors if isinstance(params, LowRankParams) else np.zeros((params.n_components, params.n_features, 0))
    n_f = min(n_factors, factors.shape[2])
    rows = []
    for k in order:
        images = [params.means[k]]
        for j in range(n_f):
            images += [params.means[k] + factors[k, :, j], params.means[k] - factors[k, :, j]]
        rows.append(images)
    shown = np.asarray(rows)
    low, high = float(shown.min()), float(shown.max())
    n_cols = 1 + 2 * n_f
    figure = Figure(figsize=(1.3 * n_cols + 0.6, 1.3 * len(order) + 0.4), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = np.asarray(figure.subplots(len(order), n_cols, squeeze=False))
    titles = ["mean"] + [f"{sign}A{j + 1}" for j in range(n_f) for sign in ("+", "-")]
    for r, (k, images) in enumerate(zip(order, rows)):
        for c, values in enumerate(images):
            ax = axes[r, c]
            image = _to_image(values, shape, low, high)
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{k}: w={params.weights[k]:.3f}", fontsize=7)
    if path is not None:
        _save(figure, path, storage_options)
    return figure


# -- mixtures of multinomials: top features per component ----------------------------


def _multinomial_params(model: Any) -> Any:
    """The ``MultinomialParams`` of a fitted MultinomialMixture (or the parameters themselves)."""
    from dgmm.core.multinomial import MultinomialParams

    if isinstance(model, MultinomialParams):
        return model
    params = model.params_ if isinstance(getattr(type(model), "params_", None), property) else None
    if not isinstance(params, MultinomialParams):
        raise UnsupportedInputError(
            f"plot_top_features expects a fitted MultinomialMixture (or MultinomialParams); got "
            f"{type(model).__name__}. Fit one, or load one with dgmm.load(path); for a Gaussian "
            "mixture use plot_fit or plot_components."
        )
    return params


def top_features(
    feature_log_prob: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` most probable features of every component, most probable first.

    Parameters
    ----------
    feature_log_prob : ndarray of shape (n_components, n_features)
    n : int

    Returns
    -------
    index : ndarray of shape (n_components, min(n, n_features)), int
        Ties keep the lower feature index first.
    prob : ndarray of shape (n_components, min(n, n_features))

    Examples
    --------
    >>> index, prob = top_features(np.log([[0.1, 0.6, 0.3]]), 2)
    >>> index.tolist(), prob.round(2).tolist()
    ([[1, 2]], [[0.6, 0.3]])
    """
    n = int(min(max(n, 0), feature_log_prob.shape[1]))
    index = np.empty((feature_log_prob.shape[0], n), dtype=np.int64)
    for k, row in enumerate(feature_log_prob):
        # argpartition first: a full sort of 200,000 words per component costs ~10 ms.
        part = np.argpartition(-row, n - 1)[:n] if 0 < n < row.size else np.arange(row.size)[:n]
        # Stable on the (value, index) pairs of the partition, so ties are deterministic.
        part = np.sort(part)
        index[k] = part[np.argsort(-row[part], kind="stable")]
    return index, np.exp(np.take_along_axis(feature_log_prob, index, axis=1))


def plot_top_features(
    model: Any,
    *,
    n_features: int = 10,
    n_components: int = 12,
    feature_names: Any = None,
    n_cols: int = 4,
    path: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """Bars of the most probable features (words, genes) of each component, heaviest first.

    Parameters
    ----------
    model : MultinomialMixture or MultinomialParams
        A fitted mixture of multinomials, e.g. from :func:`dgmm.load`.
    n_features : int, default=10
        Bars per component: its most probable features, the most probable on top.
    n_components : int, default=12
        Components shown at most: the heaviest, in decreasing weight.
    feature_names : array-like of shape (n_features_in_,), default=None
        Bar labels (``vectorizer.get_feature_names_out()``); by default the
        model's ``feature_names_in_`` when the fit saw names, else the
        feature indices.
    n_cols : int, default=4
        Panels per row.
    path : str or path-like, default=None
        Also write the figure there (as :func:`plot_fit`).
    storage_options : mapping, default=None

    Returns
    -------
    figure : matplotlib.figure.Figure
        One panel per component, titled with its index and weight; bar
        lengths are the word probabilities ``b_kw``.
    """
    for name, value in (("n_features", n_features), ("n_components", n_components), ("n_cols", n_cols)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidOptionError(f"{name} must be an integer >= 1; got {value!r}. Pass e.g. {name}=10.")
    Figure, FigureCanvasAgg, _ = _matplotlib()
    params = _multinomial_params(model)
    names = feature_names if feature_names is not None else getattr(model, "feature_names_in_", None)
    if names is not None:
        names = np.asarray(names, dtype=object)
        if names.shape != (params.n_features,):
            raise ShapeMismatchError(
                f"feature_names has shape {names.shape}, but the model has {params.n_features} "
                f"features; expected ({params.n_features},). Pass the vocabulary the model was fitted with."
            )
    order = np.argsort(-params.weights, kind="stable")[:n_components]
    index, prob = top_features(params.feature_log_prob[order], n_features)
    n_shown = len(order)
    n_cols = min(n_cols, n_shown)
    n_rows = -(-n_shown // n_cols)
    height = 0.6 + 0.22 * index.shape[1]
    figure = Figure(figsize=(3.2 * n_cols, height * n_rows + 0.3), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = np.asarray(figure.subplots(n_rows, n_cols, squeeze=False)).ravel()
    top = float(prob.max()) if prob.size else 1.0
    for ax, k, words, p in zip(axes, order, index, prob):
        labels = [str(names[w]) if names is not None else f"#{w}" for w in words]
        positions = np.arange(len(words))[::-1]  # the most probable on top
        ax.barh(positions, p, color="C0")
        ax.set_yticks(positions, labels, fontsize=7)
        ax.set_xlim(0.0, 1.05 * top)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"component {k}: w={params.weights[k]:.3f}", fontsize=8)
    for ax in axes[n_shown:]:
        ax.set_visible(False)
    figure.tight_layout()
    if path is not None:
        _save(figure, path, storage_options)
    return figure
