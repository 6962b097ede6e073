"""Datasets for simulating online training streams.

Every loader returns stratified train / validation / test splits as float32
feature matrices and int64 labels, so that the defenses and the attacks can be
benchmarked on several datasets through one interface. Nothing is downloaded:

- ``"digits"``, ``"mnist1d"``, ``"synthetic"``: images and signals shipped
  with scikit-learn or generated locally;
- ``"imagesegments"``, ``"shuttle"``, ``"phishing"``, ``"bananas"``: real
  tabular data sets bundled in the `river <https://riverml.xyz>`_ wheel;
- ``"sea"``, ``"agrawal"``, ``"hyperplane"``, ``"randomrbf"``, ``"led"``
  (:data:`DRIFT_STREAMS`): river's concept-drift generators.
  :func:`load_stream_dataset` returns the concept *before* the drift, a
  stationary data set for the attack protocol; :func:`load_drift_stream`
  returns the same data set followed by a stream whose concept really drifts,
  as the generator defines it, and a test set of the drifted concept.

The river data sets need the optional ``river`` package.
"""

import itertools
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from numbers import Integral, Real
from typing import Callable, Optional

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state, check_scalar, resample

__all__ = [
    "DATASETS",
    "DRIFT_STREAMS",
    "RIVER_DATASETS",
    "description",
    "image_shape",
    "input_bounds",
    "load_drift_stream",
    "load_stream_dataset",
]

_MNIST1D_DEFAULT_SAMPLES = 5000
_SYNTHETIC_DEFAULT_SAMPLES = 20000
#: The "synthetic" data set's problem: make_classification's arguments but its size and seed.
_SYNTHETIC_PROBLEM = dict(n_features=64, n_informative=32, n_classes=10, class_sep=1.5,
                          flip_y=0.0)
# Shuttle has 49,097 rows; a stratified subsample keeps a protocol run short.
_SHUTTLE_DEFAULT_SAMPLES = 5000
# Rows of the concept before the drift (split into train / val / test).
_DRIFT_DEFAULT_SAMPLES = 3000


def _subsample(X, y, n_samples, rng):
    """Draw ``n_samples`` rows without replacement, stratified on ``y``."""
    if n_samples is None or n_samples == len(y):
        return X, y
    return resample(
        X, y, replace=False, n_samples=n_samples, stratify=y, random_state=rng
    )


def _check_available(name, n_samples, n_available):
    if n_samples is not None and n_samples > n_available:
        raise ValueError(
            f"n_samples={n_samples} exceeds the {n_available} samples of the "
            f"{name!r} dataset."
        )


def _seed(rng):
    """An int seed for a generator that is not seeded by ``rng`` itself."""
    return int(rng.randint(np.iinfo(np.int32).max))


@contextmanager
def _preserved_global_rng():
    """Restore the global ``random`` and ``numpy.random`` states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _load_digits(n_samples, rng):
    X, y = load_digits(return_X_y=True)
    _check_available("digits", n_samples, len(y))
    return _subsample(X / 16.0, y, n_samples, rng)


def _load_mnist1d(n_samples, rng):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError(
            "The 'mnist1d' dataset requires the mnist1d package; install it "
            'with: pip install "dsc-sklearn[mnist1d]"'
        ) from exc

    if n_samples is None:
        n_samples = _MNIST1D_DEFAULT_SAMPLES
    args = get_dataset_args()
    # make_dataset draws the same number of samples for each of the 10 classes.
    args.num_samples = 10 * math.ceil(n_samples / 10)
    args.seed = _seed(rng)
    with _preserved_global_rng():
        raw = make_dataset(args)
    X = np.concatenate([raw["x"], raw["x_test"]])
    y = np.concatenate([raw["y"], raw["y_test"]])
    return _subsample(X, y, n_samples, rng)


def _load_synthetic(n_samples, rng):
    return make_classification(
        n_samples=_SYNTHETIC_DEFAULT_SAMPLES if n_samples is None else n_samples,
        random_state=rng, **_SYNTHETIC_PROBLEM,
    )


# ----------------------------------------------------------------------------
# river: bundled real data sets and concept-drift generators


def _import_river(name):
    """``river.datasets``, or an ImportError that says how to install it."""
    try:
        import river.datasets
        import river.datasets.synth  # noqa: F401  (the generators)
    except ImportError as exc:
        raise ImportError(
            f"The {name!r} dataset requires the river package; install it "
            'with: pip install "river>=0.21"'
        ) from exc
    return river.datasets


def _to_arrays(rows):
    """``(x, y)`` pairs of a river stream as ``X`` (float64) and ``y`` arrays.

    The columns follow the feature order of the first row; booleans and
    integer-coded categories become numbers.
    """
    keys = list(rows[0][0])
    X = np.array([[x[key] for key in keys] for x, _ in rows], dtype=np.float64)
    y = np.array([target for _, target in rows])
    return X, y


@lru_cache(maxsize=None)
def _read_river_dataset(name):
    """All rows of a data set bundled with river, labels coded 0..k-1 (read-only)."""
    datasets = _import_river(name)
    river_class = _SPECS[name].river_class
    dataset_class = getattr(datasets, river_class, None)
    if dataset_class is None:
        import river

        raise ImportError(
            f"river {river.__version__} does not bundle datasets."
            f"{river_class}, needed by the {name!r} dataset; upgrade "
            "it with: pip install -U river"
        )
    dataset = dataset_class()
    if isinstance(dataset, datasets.base.RemoteDataset):
        raise ImportError(
            f"river's datasets.{river_class} is downloaded, not "
            f"bundled, in this river version; the {name!r} dataset loads only "
            "bundled files."
        )
    X, labels = _to_arrays(list(dataset))
    _, y = np.unique(labels, return_inverse=True)
    y = y.astype(np.int64)
    X.flags.writeable = y.flags.writeable = False
    return X, y


def _load_river(name, n_samples, rng, default=None):
    X, y = _read_river_dataset(name)
    _check_available(name, n_samples, len(y))
    return _subsample(X, y, default if n_samples is None else n_samples, rng)


def _sigmoid_progress(n_stream, position, width):
    """Probability that stream row ``t`` comes from the new concept."""
    return 1.0 / (1.0 + np.exp(-4.0 * (np.arange(n_stream) - position) / width))


@dataclass(frozen=True)
class _ConceptSwitch:
    """A switch between two river generators through ``ConceptDriftStream``.

    ``before`` and ``after`` make the generator of the old and of the new
    concept from ``(synth, seed)``; the old concept must not depend on the
    seed (it does not for SEA, Agrawal and LED without drifting features).
    """

    before: Callable
    after: Callable
    drift: str

    def stationary(self, synth, n_samples, rng):
        rows = itertools.islice(self.before(synth, _seed(rng)), n_samples)
        return _to_arrays(list(rows)), None

    def drifting(self, synth, state, n_stream, n_after, position, width, rng):
        seed_old, seed_new, seed_mix = _seed(rng), _seed(rng), _seed(rng)
        mixture = synth.ConceptDriftStream(
            stream=self.before(synth, seed_old),
            drift_stream=self.after(synth, seed_new),
            # river counts the rows from 1: row ``position`` is the centre.
            position=position + 1,
            width=width,
            seed=seed_mix,
        )
        stream = _to_arrays(list(itertools.islice(mixture, n_stream)))
        # The mixture drew at most n_stream rows from its copy of the new
        # concept; the rows after those are fresh rows of the same concept
        # (for LED the swapped segments depend on the seed).
        new_concept = iter(self.after(synth, seed_new))
        rows = itertools.islice(new_concept, n_stream, n_stream + n_after)
        after = _to_arrays(list(rows))
        return stream, _sigmoid_progress(n_stream, position, width), after


@dataclass(frozen=True)
class _MovingConcept:
    """A river generator whose concept moves at ``speed`` per row.

    The generator is made with its ``rate`` attribute at 0 (a stationary
    concept); the drift is switched on for ``width`` rows centred on
    ``position`` and off again, which freezes the concept reached. River's
    generators read the attribute at every row.
    """

    make: Callable
    rate: str
    speed: float
    drift: str

    def stationary(self, synth, n_samples, rng):
        generator = self.make(synth, _seed(rng))
        setattr(generator, self.rate, 0.0)
        rows = iter(generator)
        return _to_arrays(list(itertools.islice(rows, n_samples))), (generator, rows)

    def drifting(self, synth, state, n_stream, n_after, position, width, rng):
        generator, rows = state
        start = position - width // 2
        drawn = list(itertools.islice(rows, start))
        setattr(generator, self.rate, self.speed)
        drawn += itertools.islice(rows, width)
        setattr(generator, self.rate, 0.0)
        drawn += itertools.islice(rows, n_stream - start - width + n_after)
        X, y = _to_arrays(drawn)
        progress = np.clip((np.arange(n_stream) - start + 1) / width, 0.0, 1.0)
        return (X[:n_stream], y[:n_stream]), progress, (X[n_stream:], y[n_stream:])


def _led(synth, seed, n_drift_features):
    return synth.LEDDrift(
        seed=seed, noise_percentage=0.1, irrelevant_features=True,
        n_drift_features=n_drift_features,
    )


_DRIFTS = {
    "sea": _ConceptSwitch(
        before=lambda synth, seed: synth.SEA(variant=2, noise=0.1, seed=seed),
        after=lambda synth, seed: synth.SEA(variant=3, noise=0.1, seed=seed),
        drift=(
            "SEA's threshold on x0 + x1 moves from 7 (variant 2) to 9.5 (variant "
            "3): a sigmoid switch by river's ConceptDriftStream."
        ),
    ),
    "agrawal": _ConceptSwitch(
        before=lambda synth, seed: synth.Agrawal(classification_function=0, seed=seed),
        after=lambda synth, seed: synth.Agrawal(classification_function=2, seed=seed),
        drift=(
            "Agrawal's classification function 0 (age < 40 or age >= 60) becomes "
            "function 2 (education level within age bands): a sigmoid switch by "
            "river's ConceptDriftStream."
        ),
    ),
    "hyperplane": _MovingConcept(
        make=lambda synth, seed: synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=10, noise_percentage=0.05,
            sigma=0.1,
        ),
        rate="mag_change",
        speed=0.01,
        drift=(
            "All 10 weights of the hyperplane move by mag_change=0.01 per row "
            "(direction reversed with probability sigma=0.1 per row) during the "
            "transition, then stay."
        ),
    ),
    "randomrbf": _MovingConcept(
        make=lambda synth, seed: synth.RandomRBFDrift(
            seed_model=seed, seed_sample=seed + 1, n_classes=5, n_features=10,
            n_centroids=50, n_drift_centroids=25,
        ),
        rate="change_speed",
        speed=0.002,
        drift=(
            "25 of the 50 centroids move at change_speed=0.002 per row (bouncing "
            "off the unit cube) during the transition, then stay."
        ),
    ),
    "led": _ConceptSwitch(
        before=partial(_led, n_drift_features=0),
        after=partial(_led, n_drift_features=4),
        drift=(
            "4 of the 7 segments of the LED digit are swapped with irrelevant "
            "attributes (positions drawn from the seed): a sigmoid switch by "
            "river's ConceptDriftStream."
        ),
    ),
}

#: Names of the concept-drift generators of :func:`load_drift_stream`.
DRIFT_STREAMS = tuple(_DRIFTS)


def _load_before_drift(name, n_samples, rng):
    synth = _import_river(name).synth
    n_samples = _DRIFT_DEFAULT_SAMPLES if n_samples is None else n_samples
    return _DRIFTS[name].stationary(synth, n_samples, rng)[0]


@dataclass(frozen=True)
class _DatasetSpec:
    """One data set: how it loads and what a model and a drift need to know of it.

    ``stream`` is ``"river"`` for a real data set bundled with river (its
    class there is ``river_class``), ``"generator"`` for a river drift
    generator, ``None`` for the rest.
    """

    loader: Callable
    n_classes: int
    image_shape: Optional[tuple]
    input_bounds: Optional[tuple]
    standardize: bool
    description: str
    stream: Optional[str] = None
    river_class: Optional[str] = None


def _tabular(loader, n_classes, description, stream=None, river_class=None):
    """A standardised tabular data set."""
    return _DatasetSpec(
        loader=loader, n_classes=n_classes, image_shape=None, input_bounds=None,
        standardize=True, description=description, stream=stream, river_class=river_class,
    )


def _river(name, river_class, n_classes, description, default=None):
    """A real tabular data set bundled with river."""
    return _tabular(partial(_load_river, name, default=default), n_classes, description,
                    stream="river", river_class=river_class)


def _generator(name, n_classes, description):
    """The concept before the drift of one of river's drift generators."""
    return _tabular(partial(_load_before_drift, name), n_classes, description,
                    stream="generator")


_SPECS = {
    "digits": _DatasetSpec(
        loader=_load_digits,
        n_classes=10,
        image_shape=(1, 8, 8),
        input_bounds=(0.0, 1.0),
        standardize=False,
        description=(
            "Scikit-learn's 8x8 handwritten digits (1797 images) with pixel "
            "intensities scaled to [0, 1]."
        ),
    ),
    "mnist1d": _DatasetSpec(
        loader=_load_mnist1d,
        n_classes=10,
        image_shape=(1, 40),
        input_bounds=None,
        standardize=True,
        description=(
            "Procedurally generated MNIST-1D signals of length 40, "
            "standardized with training-split statistics."
        ),
    ),
    "synthetic": _tabular(
        _load_synthetic, _SYNTHETIC_PROBLEM["n_classes"],
        f"A {_SYNTHETIC_PROBLEM['n_classes']}-class, {_SYNTHETIC_PROBLEM['n_features']}-feature "
        "Gaussian classification problem from make_classification, standardized with "
        "training-split statistics.",
    ),
    "imagesegments": _river(
        "imagesegments", "ImageSegments", 7,
        "River's ImageSegments (UCI Statlog image segmentation): 2310 "
        "segments, 18 features, 7 balanced classes.",
    ),
    "shuttle": _river(
        "shuttle", "Shuttle", 2,
        "River's Shuttle (UCI Statlog shuttle as ODDS anomaly detection): 9 "
        "sensor features, 7.15 % anomalies; a stratified subsample of 5000 of "
        "its 49097 rows by default.",
        default=_SHUTTLE_DEFAULT_SAMPLES,
    ),
    "phishing": _river(
        "phishing", "Phishing", 2,
        "River's Phishing websites: 1250 pages, 9 features, 43.8 % phishing.",
    ),
    "bananas": _river(
        "bananas", "Bananas", 2,
        "River's Bananas: 5300 points in 2-D banana-shaped clusters, 44.8 % "
        "positive.",
    ),
    "sea": _generator(
        "sea", 2,
        "River's SEA concepts before the drift: 3 uniform features in [0, 10], "
        "positive when x0 + x1 > 7, 10 % label noise.",
    ),
    "agrawal": _generator(
        "agrawal", 2,
        "River's Agrawal loan applications before the drift: 9 features "
        "(3 integer-coded categories), classification function 0.",
    ),
    "hyperplane": _generator(
        "hyperplane", 2,
        "River's rotating hyperplane before the drift: 10 uniform features, a "
        "fixed random hyperplane, 5 % label noise.",
    ),
    "randomrbf": _generator(
        "randomrbf", 5,
        "River's random RBF before the drift: 10 features around 50 Gaussian "
        "centroids of 5 classes.",
    ),
    "led": _generator(
        "led", 10,
        "River's LED digits before the drift: 7 segments with 10 % noise and "
        "17 irrelevant binary attributes.",
    ),
}

DATASETS = tuple(_SPECS)

#: The real data sets bundled with river.
RIVER_DATASETS = tuple(name for name, spec in _SPECS.items() if spec.stream == "river")


def image_shape(name):
    """The shape a row of data set ``name`` reshapes into for a CNN; ``None`` for tabular data.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.datasets import image_shape
    >>> image_shape("digits"), image_shape("phishing")
    ((1, 8, 8), None)
    """
    return _spec(name).image_shape


def input_bounds(name):
    """The range data set ``name``'s features lie in; ``None`` when standardised.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.datasets import input_bounds
    >>> input_bounds("digits"), input_bounds("mnist1d")
    ((0.0, 1.0), None)
    """
    return _spec(name).input_bounds


def description(name):
    """What data set ``name`` is, in one sentence.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.datasets import description
    >>> description("phishing")
    "River's Phishing websites: 1250 pages, 9 features, 43.8 % phishing."
    """
    return _spec(name).description


def _spec(name):
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}; choose from {DATASETS}.")
    return _SPECS[name]


def _check_params(name, n_samples, validation_size, test_size, valid_names=DATASETS):
    if name not in valid_names:
        valid = ", ".join(repr(valid_name) for valid_name in valid_names)
        raise ValueError(f"Unknown dataset {name!r}; valid names are {valid}.")
    if n_samples is not None:
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
    for size_name, size in (
        ("validation_size", validation_size),
        ("test_size", test_size),
    ):
        check_scalar(
            size, size_name, Real, min_val=0, max_val=1,
            include_boundaries="neither",
        )
    if validation_size + test_size >= 1:
        raise ValueError(
            "validation_size + test_size must be < 1 to leave training data, "
            f"got {validation_size} + {test_size}."
        )


def _split(X, y, validation_size, test_size, rng):
    """Return stratified ``{"train", "val", "test"}`` splits as ``(X, y)`` pairs."""
    n_test = math.ceil(test_size * len(y))
    n_val = math.ceil(validation_size * len(y))
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=n_test, stratify=y, random_state=rng
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=rng
    )
    return {
        "train": (X_train, y_train),
        "val": (X_val, y_val),
        "test": (X_test, y_test),
    }


def _arrays(**pairs):
    """``X_<key>`` float32 and ``y_<key>`` int64 C-contiguous arrays."""
    arrays = {}
    for key, (X, y) in pairs.items():
        arrays[f"X_{key}"] = np.ascontiguousarray(X, dtype=np.float32)
        arrays[f"y_{key}"] = np.ascontiguousarray(y, dtype=np.int64)
    return arrays


def _make_bunch(name, X, y, validation_size, test_size, rng):
    """Split, standardise (training statistics) and describe one data set.

    Returns the Bunch and the transform applied to the splits.
    """
    spec = _SPECS[name]
    splits = _split(X, y, validation_size, test_size, rng)
    transform = np.asarray
    if spec.standardize:
        transform = StandardScaler().fit(splits["train"][0]).transform
    splits = {key: (transform(X_split), y_split) for key, (X_split, y_split) in splits.items()}
    data = Bunch(
        **_arrays(**splits),
        name=name,
        image_shape=spec.image_shape,
        input_bounds=spec.input_bounds,
        n_classes=spec.n_classes,
        description=spec.description,
    )
    return data, transform


def load_stream_dataset(
    name="digits",
    *,
    n_samples=None,
    validation_size=0.1,
    test_size=0.25,
    random_state=None,
):
    """Load a classification dataset split for online-training experiments.

    The samples are split, stratified on the labels, into a test set and then
    a validation set taken from the remaining samples; what is left forms the
    training stream. Standardized datasets are scaled with statistics of the
    training split only. Nothing is downloaded.

    Parameters
    ----------
    name : str, default="digits"
        Dataset to load, one of :data:`DATASETS`:

        - ``"digits"``: :func:`sklearn.datasets.load_digits` (1797 samples),
          pixels scaled to [0, 1].
        - ``"mnist1d"``: MNIST-1D signals of length 40, generated locally by
          the optional ``mnist1d`` package (5000 samples by default) and
          standardized per feature.
        - ``"synthetic"``: :func:`sklearn.datasets.make_classification` with
          10 classes and 64 features (20000 samples by default), standardized
          per feature; meant for scale tests.

        Real tabular data sets bundled in the optional ``river`` package,
        standardized per feature, labels coded ``0..n_classes - 1`` in the
        sorted order of river's labels (booleans: False 0, True 1):

        - ``"imagesegments"``: ImageSegments, 2310 image segments, 18
          features, 7 classes of 330 each (brickface, cement, foliage, grass,
          path, sky, window).
        - ``"shuttle"``: Shuttle, river's ODDS version of UCI Statlog
          Shuttle: 49097 rows, 9 integer sensor features, 45586 normal (0)
          and 3511 anomalies (1, 7.15 %). By default a stratified, seeded
          subsample of 5000 rows (4642 / 358), so that a protocol run takes
          seconds; ``n_samples`` up to 49097 selects more.
        - ``"phishing"``: Phishing, 1250 web pages, 9 features, 702
          legitimate (0) and 548 phishing (1).
        - ``"bananas"``: Bananas, 5300 points in 2-D, 2924 (0) and 2376 (1).

        The concept before the drift of river's drift generators (see
        :func:`load_drift_stream`; 3000 samples by default, standardized
        per feature):

        - ``"sea"``: SEA, 3 features uniform in [0, 10], positive when
          ``x0 + x1 > 7`` (variant 2), 10 % label noise; about 70 % positive.
        - ``"agrawal"``: Agrawal, 9 loan-application features (``elevel``,
          ``car`` and ``zipcode`` as integer codes), classification
          function 0; about 68 % positive.
        - ``"hyperplane"``: Hyperplane, 10 features uniform in [0, 1], a
          random hyperplane, 5 % label noise; balanced.
        - ``"randomrbf"``: RandomRBFDrift with its centroids still, 10
          features, 50 centroids, 5 classes (unequal: their weights are
          random).
        - ``"led"``: LEDDrift, a 7-segment digit with 10 % noise per segment
          and 17 irrelevant binary attributes (24 features), 10 balanced
          classes.

    n_samples : int, default=None
        Total number of samples before splitting. ``None`` uses the dataset's
        default size. For the fixed data sets (``"digits"`` and river's) a
        stratified subsample is drawn, and a value above their size raises a
        ``ValueError``.

    validation_size : float, default=0.1
        Fraction of all samples put in the validation split, in (0, 1).

    test_size : float, default=0.25
        Fraction of all samples put in the test split, in (0, 1).
        ``validation_size + test_size`` must be below 1.

    random_state : int, RandomState instance or None, default=None
        Seeds the data generation, the subsampling and the splits. Pass an
        int for reproducible output across calls.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        X_train, X_val, X_test : ndarray of shape (n_split_samples, n_features)
            C-contiguous float32 feature matrices.
        y_train, y_val, y_test : ndarray of shape (n_split_samples,)
            int64 class labels in ``range(n_classes)``.
        name : str
            The dataset name.
        image_shape : tuple of int or None
            Shape a convolutional network should reshape one row into, e.g.
            ``(1, 8, 8)`` for ``"digits"``; ``None`` for non-spatial data.
        input_bounds : tuple of float or None
            ``(low, high)`` range of valid inputs, or ``None`` if unbounded.
        n_classes : int
            Number of classes.
        description : str
            One-sentence description of the dataset.

    Raises
    ------
    ValueError
        If ``name`` is unknown or a size parameter is out of range.
    ImportError
        If ``name="mnist1d"`` and the ``mnist1d`` package is not installed,
        or a river data set is asked for and ``river`` is not installed.

    See Also
    --------
    load_drift_stream : The drift generators' concept before the drift, and
        a stream through the drift.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.datasets import load_stream_dataset
    >>> data = load_stream_dataset("digits", random_state=0)
    >>> data.X_train.shape, data.X_val.shape, data.X_test.shape
    ((1167, 64), (180, 64), (450, 64))
    >>> data.X_train.dtype, data.y_train.dtype
    (dtype('float32'), dtype('int64'))
    >>> data.image_shape, data.input_bounds, data.n_classes
    ((1, 8, 8), (0.0, 1.0), 10)
    >>> small = load_stream_dataset("synthetic", n_samples=1000, random_state=0)
    >>> small.X_train.shape
    (650, 64)
    >>> shuttle = load_stream_dataset("shuttle", random_state=0)
    >>> shuttle.X_train.shape, shuttle.n_classes, shuttle.image_shape
    ((3250, 9), 2, None)
    >>> int(shuttle.y_train.sum())  # anomalies: 7 % of the rows
    232
    """
    _check_params(name, n_samples, validation_size, test_size)
    rng = check_random_state(random_state)
    X, y = _SPECS[name].loader(n_samples, rng)
    return _make_bunch(name, X, y, validation_size, test_size, rng)[0]


def load_drift_stream(
    name="sea",
    *,
    n_samples=None,
    n_stream=4000,
    position=1000,
    width=500,
    validation_size=0.1,
    test_size=0.25,
    random_state=None,
):
    """A stationary data set, then a stream through a real concept drift.

    The generator's concept before the drift gives the same stratified
    train / validation / test splits as :func:`load_stream_dataset` with
    the same arguments (identical arrays for the same ``random_state``).
    Then ``n_stream`` ordered rows arrive whose concept changes, as river's
    generator defines it, over about ``width`` rows centred on row
    ``position``; the stream is stationary before and after. A test set of
    the concept after the drift, as large as the one before, comes last.
    Every feature matrix is standardized with the statistics of the
    training split before the drift: what a deployed model would know.

    ``"sea"``, ``"agrawal"`` and ``"led"`` switch concepts through river's
    ``ConceptDriftStream``: stream row ``t`` comes from the new concept
    with probability ``1 / (1 + exp(-4 (t - position) / width))``.
    ``"hyperplane"`` and ``"randomrbf"`` move their concept at a constant
    rate during the ``width`` rows from ``position - width // 2``; the
    total change therefore grows with ``width``.

    ==============  =========================================================
    name            what drifts
    ==============  =========================================================
    ``sea``         SEA's threshold on ``x0 + x1``: 7 (variant 2) to 9.5
                    (variant 3); 10 % label noise in both.
    ``agrawal``     Agrawal's classification function 0 (age < 40 or
                    age >= 60) to function 2 (education level within age
                    bands; river's default ``ConceptDriftStream`` pair).
    ``hyperplane``  Hyperplane: all 10 weights move by ``mag_change=0.01``
                    per row, each direction reversed with probability
                    ``sigma=0.1`` per row (a random walk of the boundary).
    ``randomrbf``   RandomRBFDrift: 25 of its 50 centroids move at
                    ``change_speed=0.002`` per row along fixed random
                    directions, bouncing off the unit cube; class labels
                    and weights stay.
    ``led``         LEDDrift: 4 of the 7 segments trade places with
                    irrelevant attributes (positions drawn from the seed).
    ==============  =========================================================

    With the defaults, a model fitted on the training split loses accuracy
    on the test set after the drift, while the stream's first 500 rows
    score as the test set before it and its last 1000 rows as the test set
    after it (scikit-learn's ``MLPClassifier((64,))``, ``random_state`` 0
    to 4, test accuracy before -> after): SEA 0.88-0.91 -> 0.73-0.76,
    Agrawal 0.98-0.99 -> 0.45-0.48, hyperplane 0.92-0.93 -> 0.61-0.83 (a
    random walk: its size varies with the seed), random RBF 0.89-0.91 ->
    0.62-0.70, LED 0.69-0.74 -> 0.23-0.31.

    Parameters
    ----------
    name : str, default="sea"
        One of :data:`DRIFT_STREAMS`: ``"sea"``, ``"agrawal"``,
        ``"hyperplane"``, ``"randomrbf"``, ``"led"``.
    n_samples : int, default=None
        Rows of the concept before the drift, split into train / validation
        / test; ``None`` uses 3000.
    n_stream : int, default=4000
        Rows of the drifting stream.
    position : int, default=1000
        Stream row at the centre of the drift.
    width : int, default=500
        Width of the drift, in rows; the transition must lie in the stream:
        ``width / 2 <= position <= n_stream - width / 2``.
    validation_size, test_size : float, default=0.1, 0.25
        Fractions of ``n_samples`` as in :func:`load_stream_dataset`.
    random_state : int, RandomState instance or None, default=None
        Seeds river's generators and the splits. Pass an int for
        reproducible output across calls.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The attributes of :func:`load_stream_dataset` (``X_train``,
        ``y_train``, ``X_val``, ``y_val``, ``X_test``, ``y_test``, ``name``,
        ``image_shape=None``, ``input_bounds=None``, ``n_classes``,
        ``description``), the concept before the drift, and:

        X_stream : ndarray of shape (n_stream, n_features)
            float32 rows of the drifting stream, in order.
        y_stream : ndarray of shape (n_stream,)
            Their int64 labels.
        drift_progress : ndarray of shape (n_stream,)
            float64 in [0, 1]: for each stream row, the probability that it
            comes from the new concept (concept switches) or the fraction of
            the drift applied so far (moving concepts).
        X_test_after, y_test_after : ndarray
            A test set of the concept after the drift, ``len(y_test)`` rows.
        drift_position, drift_width : int
            ``position`` and ``width``.
        drift : str
            What drifts, in one sentence.

    Raises
    ------
    ValueError
        If ``name`` is unknown, or a size or the drift's position or width
        is out of range.
    ImportError
        If ``river`` is not installed.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.datasets import load_drift_stream
    >>> data = load_drift_stream("sea", n_samples=1000, n_stream=1000,
    ...                          position=500, width=200, random_state=0)
    >>> data.X_train.shape, data.X_stream.shape, data.X_test_after.shape
    ((650, 3), (1000, 3), (250, 3))
    >>> data.X_stream.dtype, data.y_stream.dtype
    (dtype('float32'), dtype('int64'))
    >>> data.drift_progress[[0, 500, 999]].round(2).tolist()
    [0.0, 0.5, 1.0]

    A model fitted before the drift is wrong more often after it:

    >>> from sklearn.linear_model import LogisticRegression
    >>> model = LogisticRegression().fit(data.X_train, data.y_train)
    >>> before = model.score(data.X_test, data.y_test)
    >>> after = model.score(data.X_test_after, data.y_test_after)
    >>> print(f"{before:.2f} -> {after:.2f}")
    0.87 -> 0.73
    """
    _check_params(name, n_samples, validation_size, test_size, DRIFT_STREAMS)
    check_scalar(n_stream, "n_stream", Integral, min_val=1)
    check_scalar(width, "width", Integral, min_val=1)
    check_scalar(position, "position", Integral)
    if not width / 2 <= position <= n_stream - width / 2:
        raise ValueError(
            "The drift must lie in the stream: width / 2 <= position <= "
            f"n_stream - width / 2, got position={position}, width={width}, "
            f"n_stream={n_stream}."
        )
    synth = _import_river(name).synth
    rng = check_random_state(random_state)
    n_samples = _DRIFT_DEFAULT_SAMPLES if n_samples is None else n_samples
    generator = _DRIFTS[name]
    (X, y), state = generator.stationary(synth, n_samples, rng)
    data, transform = _make_bunch(name, X, y, validation_size, test_size, rng)
    stream, progress, after = generator.drifting(
        synth, state, n_stream, len(data.y_test), position, width, rng
    )
    data.update(
        _arrays(
            stream=(transform(stream[0]), stream[1]),
            test_after=(transform(after[0]), after[1]),
        ),
        drift_progress=progress,
        drift_position=position,
        drift_width=width,
        drift=generator.drift,
    )
    return data
