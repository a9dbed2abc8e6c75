"""plot_fit: files that open, ellipses with the right geometry, curves with the history."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dgmm import GaussianMixture
from dgmm.core.params import GMMParams
from dgmm.errors import OptionalDependencyError, ShapeMismatchError, TargetNotWritableError

from ._helpers import COVARIANCE_TYPES, dense_covariance, make_mixture

matplotlib = pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
from matplotlib.image import imread  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from dgmm import plot  # noqa: E402


def rotation(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@pytest.fixture(scope="module")
def fitted():
    data = make_mixture(np.random.default_rng(3), n_samples=500, n_features=3, n_components=3)
    return data.X, {
        ct: GaussianMixture(3, covariance_type=ct, random_state=0, max_iter=20).fit(data.X)
        for ct in COVARIANCE_TYPES
    }


def ellipses(figure) -> list[Ellipse]:
    return [p for ax in figure.axes for p in ax.patches if isinstance(p, Ellipse)]


# -- geometry -------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 30.0, -60.0, 90.0])
def test_ellipse_geometry_of_a_known_covariance(angle):
    r = rotation(angle)
    covariance = r @ np.diag([9.0, 1.0]) @ r.T  # std 3 along `angle`, 1 across it
    width, height, got = plot.ellipse_geometry(covariance, 1.0)
    assert (width, height) == pytest.approx((6.0, 2.0))
    # An ellipse at angle a is the same as one at a +- 180.
    assert np.isclose((got - angle) % 180.0, 0.0) or np.isclose((got - angle) % 180.0, 180.0)
    assert plot.ellipse_geometry(covariance, 2.0)[:2] == pytest.approx((12.0, 4.0))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_projection_matches_dense_covariances(rng, covariance_type):
    k, d = 3, 5
    gmm = GaussianMixture(k, covariance_type=covariance_type, random_state=0, tol=10.0).fit(
        rng.normal(size=(300, d)) * np.arange(1, d + 1)
    )
    params = gmm.params_
    axes = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    center = rng.normal(size=d)
    means, covariances = plot.project_components(params, axes, center)
    for j in range(k):
        dense = dense_covariance(params.covariances, covariance_type, j, d)
        np.testing.assert_allclose(covariances[j], axes @ dense @ axes.T, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(means[j], axes @ (params.means[j] - center), rtol=1e-12)


def test_principal_axes_of_a_stretched_sample(rng):
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    X = rng.normal(size=(4000, 1)) * 10.0 * direction + rng.normal(size=(4000, 3)) + 7.0
    axes, center, variances = plot.principal_axes(X)
    assert abs(axes[0] @ direction) > 0.999
    assert np.allclose(axes @ axes.T, np.eye(2))
    np.testing.assert_allclose(center, X.mean(axis=0))
    assert variances[0] == pytest.approx(101.0, rel=0.1)


def test_principal_axes_of_a_model_without_data():
    # Two far-apart components along y: the mixture's leading axis is y.
    params = GMMParams.from_covariances(
        np.array([0.5, 0.5]), np.array([[0.0, -10.0], [0.0, 10.0]]), np.array([1.0, 1.0]), "spherical"
    )
    axes, center, variances = plot.principal_axes(None, params)
    assert abs(axes[0] @ [0.0, 1.0]) == pytest.approx(1.0)
    np.testing.assert_allclose(center, [0.0, 0.0], atol=1e-12)
    assert variances == pytest.approx([101.0, 1.0])


def test_drawn_ellipses_have_the_components_geometry():
    """Two features: the view is a rotation of the plane, so axis lengths are the truth's."""
    r = rotation(25.0)
    covariances = np.array([r @ np.diag([4.0, 1.0]) @ r.T, np.diag([0.25, 0.25])])
    params = GMMParams.from_covariances(
        np.array([0.6, 0.4]), np.array([[0.0, 0.0], [8.0, 3.0]]), covariances, "full"
    )
    figure = plot.plot_fit(params)
    drawn = sorted((e.width, e.height) for e in ellipses(figure))
    expected = sorted(
        [(2 * n * 2.0, 2 * n * 1.0) for n in (1, 2)] + [(2 * n * 0.5, 2 * n * 0.5) for n in (1, 2)]
    )
    np.testing.assert_allclose(drawn, expected, rtol=1e-10)


# -- figures and files ------------------------------------------------------------


@pytest.mark.parametrize(
    "covariance_type, with_data",
    [("full", True), ("tied", False), ("diag", True), ("spherical", False)],
)
def test_png_opens_with_expected_size(tmp_path, fitted, covariance_type, with_data):
    X, models = fitted
    path = tmp_path / "fit.png"
    figure = plot.plot_fit(models[covariance_type], X if with_data else None, path=path)
    image = imread(path)
    width, height = plot.FIGSIZE
    assert image.shape[:2] == (round(height * plot.DPI), round(width * plot.DPI))
    assert image[..., :3].std() > 0.01  # not a blank canvas
    assert len(ellipses(figure)) == 2 * 3  # a 1- and a 2-sigma ellipse per component
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_convergence_curve_and_reseed_marks(fitted):
    _, models = fitted
    gmm = models["full"]
    figure = plot.plot_fit(gmm)
    curve = figure.axes[0]
    line = curve.get_lines()[0]
    np.testing.assert_array_equal(line.get_ydata(), gmm.lower_bounds_)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, gmm.n_iter_ + 1))
    # A history of 6 iterations with re-seeds at iterations 2 and 5.
    copy = GaussianMixture.from_sklearn(gmm.to_sklearn())
    reseed = {"event": "reseed", "component": 0, "split_from": 1, "reason": "collapsed"}
    copy.history_ = [
        {"iteration": i, "lower_bound": -5.0 + 0.1 * i, "change": 0.1, "seconds": 0.0,
         "events": [reseed] if i in (2, 5) else []}
        for i in range(1, 7)
    ]
    copy.lower_bounds_ = [h["lower_bound"] for h in copy.history_]
    lines = plot.plot_fit(copy).axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), copy.lower_bounds_)
    assert sorted(m.get_xdata()[0] for m in lines[1:]) == [2, 5]


@pytest.mark.parametrize("n_features", [2, 6])
def test_any_number_of_features(rng, n_features):
    X = rng.normal(size=(300, n_features))
    gmm = GaussianMixture(2, covariance_type="diag", random_state=0, tol=10.0).fit(X)
    figure = plot.plot_fit(gmm, X)
    figure.canvas.draw()  # renders without error
    assert len(ellipses(figure)) == 4


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_feature_shows_weighted_densities(rng, covariance_type):
    """No second axis: each component's curve is w_k N(mu_k, sigma_k^2), of area w_k."""
    means = np.array([[-3.0], [4.0]])
    variances = np.array([1.0, 0.25])
    covariances = {
        "full": variances[:, None, None],
        "tied": np.array([[0.5]]),
        "diag": variances[:, None],
        "spherical": variances,
    }[covariance_type]
    params = GMMParams.from_covariances(np.array([0.3, 0.7]), means, covariances, covariance_type)
    sample = rng.normal(size=(500, 1))
    figure = plot.plot_fit(params, sample)
    figure.canvas.draw()
    view = figure.axes[1]
    lines = view.get_lines()
    assert len(lines) == 3 and not ellipses(figure)  # two components and the mixture
    for k, weight in enumerate(params.weights):
        x, y = lines[k].get_xdata(), lines[k].get_ydata()
        area = np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))  # trapezoids (any NumPy)
        assert area == pytest.approx(weight, rel=1e-3)
        assert x[np.argmax(y)] == pytest.approx(means[k, 0], abs=(x[1] - x[0]))
    np.testing.assert_allclose(lines[2].get_ydata(), lines[0].get_ydata() + lines[1].get_ydata())


def test_svg_and_scikit_learn_model(tmp_path, fitted):
    X, models = fitted
    plot.plot_fit(models["tied"].to_sklearn(), X, path=tmp_path / "f.svg")
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


def test_model_fitted_on_a_dataframe_plots_a_bare_sample(rng):
    import pandas as pd

    frame = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    gmm = GaussianMixture(2, random_state=0, tol=10.0).fit(frame)
    figure = plot.plot_fit(gmm, frame.to_numpy())  # no feature-name warning (an error here)
    colours = figure.axes[1].collections[0].get_facecolors()
    assert len(np.unique(colours, axis=0)) == 2  # points coloured by both components


def test_memory_url(fitted):
    import fsspec

    _, models = fitted
    plot.plot_fit(models["diag"], path="memory://dgmm-plot-test/fit.png")
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/dgmm-plot-test/fit.png")[:8] == b"\x89PNG\r\n\x1a\n"
    fs.rm("/dgmm-plot-test", recursive=True)


def test_model_without_history(tmp_path):
    params = GMMParams.from_covariances(
        np.array([1.0]), np.zeros((1, 3)), np.ones((1, 3)), "diag"
    )
    figure = plot.plot_fit(params, path=tmp_path / "f.png")
    assert "no fit history" in [t.get_text() for t in figure.axes[0].texts]


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, fragments",
    [
        pytest.param({"X_sample": np.zeros((10, 2))}, ShapeMismatchError, ["3 features", "(10, 2)"], id="sample-wrong-features"),
        pytest.param({"X_sample": np.zeros(10)}, ShapeMismatchError, ["3 features"], id="sample-1d"),
        pytest.param({"path": "fit.notaformat"}, ValueError, ["notaformat", "png"], id="unknown-suffix"),
        pytest.param({"path": "{tmp}/file/fit.png"}, TargetNotWritableError, ["fit.png", "Cannot write"], id="unwritable"),
    ],
)
def test_bad_arguments(tmp_path, fitted, kwargs, error, fragments):
    (tmp_path / "file").write_text("a file, not a directory")
    _, models = fitted
    if "path" in kwargs:
        kwargs = {"path": kwargs["path"].format(tmp=tmp_path)}
    with pytest.raises(error) as info:
        plot.plot_fit(models["full"], **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_not_a_model():
    with pytest.raises(TypeError, match="fitted GaussianMixture"):
        plot.plot_fit(object())


def test_missing_matplotlib_says_how_to_install(monkeypatch, fitted):
    _, models = fitted
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(OptionalDependencyError, match=r"pip install .*dgmm\[plot\]") as info:
        plot.plot_fit(models["full"])
    assert isinstance(info.value, ImportError)


# -- mixtures of multinomials: top features ------------------------------------------


@pytest.fixture(scope="module")
def topics_model():
    """A MultinomialMixture fitted on documents of three topics, each with its own five words."""
    import pandas as pd
    import scipy.sparse as sp

    from dgmm import MultinomialMixture

    rng = np.random.default_rng(5)
    n_words, weights = 30, np.array([0.2, 0.5, 0.3])
    prob = np.full((3, n_words), 0.2 / (n_words - 5))
    for k in range(3):
        prob[k, 5 * k : 5 * k + 5] = 0.8 / 5
    labels = rng.choice(3, size=300, p=weights)
    x = sp.csr_matrix(np.vstack([rng.multinomial(40, prob[k]) for k in labels]).astype(np.float64))
    names = [f"word{i}" for i in range(n_words)]
    frame = pd.DataFrame(x.toarray(), columns=names)
    model = MultinomialMixture(3, alpha=0.1, random_state=0, scheduler="synchronous").fit(frame)
    return model, prob, names


def test_top_features_are_the_most_probable_in_order(rng):
    log_prob = np.log(rng.dirichlet(np.ones(50), size=4))
    index, prob = plot.top_features(log_prob, 7)
    for k in range(4):
        np.testing.assert_array_equal(index[k], np.argsort(-log_prob[k], kind="stable")[:7])
        np.testing.assert_allclose(prob[k], np.exp(log_prob[k, index[k]]), rtol=1e-15)
    tied, _ = plot.top_features(np.log(np.full((1, 6), 1 / 6)), 3)
    assert tied.tolist() == [[0, 1, 2]]  # ties: lower index first
    assert plot.top_features(log_prob, 100)[0].shape == (4, 50)


def test_top_feature_bars_heaviest_component_first_with_names(tmp_path, topics_model):
    model, _, names = topics_model
    path = tmp_path / "top.png"
    figure = plot.plot_top_features(model, n_features=5, path=path)
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert len(shown) == 3
    order = np.argsort(-model.weights_)
    for ax, k in zip(shown, order):
        assert ax.get_title().startswith(f"component {k}: w={model.weights_[k]:.3f}")
        # Labels and bars from the top of the panel down: the most probable word first.
        ticks = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
        labels = [label for _, label in ticks]
        widths = [p.get_width() for p in sorted(ax.patches, key=lambda p: -p.get_y())]
        top = model.top_features(5)[k]
        assert labels == [name for name, _ in top]
        np.testing.assert_allclose(widths, [p for _, p in top], rtol=1e-12)
        # The topic's five words are its five bars.
        assert {int(label[4:]) // 5 for label in labels} == {int(labels[0][4:]) // 5}
    image = imread(path)
    assert image[..., :3].std() > 0.01 and list(tmp_path.iterdir()) == [path]


def test_top_feature_bars_without_names_use_indices_and_cap_components(topics_model):
    model, _, names = topics_model
    figure = plot.plot_top_features(model.params_, n_features=3, n_components=2, n_cols=1)
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert len(shown) == 2
    assert all(t.get_text().startswith("#") for ax in shown for t in ax.get_yticklabels())
    given = plot.plot_top_features(model, n_features=2, feature_names=[n.upper() for n in names])
    assert all(t.get_text().startswith("WORD") for ax in given.axes for t in ax.get_yticklabels())


@pytest.mark.parametrize(
    "kwargs, error, fragments",
    [
        pytest.param({"n_features": 0}, ValueError, ["n_features", ">= 1"], id="no-bars"),
        pytest.param({"n_components": 1.5}, ValueError, ["n_components", "integer"], id="float-components"),
        pytest.param({"feature_names": ["a", "b"]}, ShapeMismatchError, ["feature_names", "30"], id="names-length"),
    ],
)
def test_top_feature_bars_bad_arguments(topics_model, kwargs, error, fragments):
    model, _, _ = topics_model
    with pytest.raises(error) as info:
        plot.plot_top_features(model, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_each_plot_refuses_the_other_family(topics_model, fitted):
    model, _, _ = topics_model
    with pytest.raises(TypeError, match="plot_top_features"):
        plot.plot_fit(model)
    _, gaussians = fitted
    with pytest.raises(TypeError, match="MultinomialMixture"):
        plot.plot_top_features(gaussians["full"])


def test_cli_plots_a_multinomial_model(tmp_path, topics_model):
    from ._helpers import invoke

    model, _, _ = topics_model
    model.save(tmp_path / "model")
    result = invoke("plot", "model", "-o", "top.png", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert imread(tmp_path / "top.png")[..., :3].std() > 0.01
    refused = invoke("plot", "model", "--image-shape", "5,6", "-o", "other.png", cwd=tmp_path)
    assert refused.exit_code == 2 and "--image-shape" in refused.output
    assert not (tmp_path / "other.png").exists()
