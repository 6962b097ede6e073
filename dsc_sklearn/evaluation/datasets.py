"""Datasets for simulating online training streams.

Every loader returns stratified train / validation / test splits as float32
feature matrices and int64 labels, so that the defenses and the attacks can be
benchmarked on several datasets through one interface.
"""

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable, Optional

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state, check_scalar, resample

__all__ = ["DATASETS", "load_stream_dataset"]

_MNIST1D_DEFAULT_SAMPLES = 5000
_SYNTHETIC_DEFAULT_SAMPLES = 20000


def _subsample(X, y, n_samples, rng):
    """Draw ``n_samples`` rows without replacement, stratified on ``y``."""
    if n_samples is None or n_samples == len(y):
        return X, y
    return resample(
        X, y, replace=False, n_samples=n_samples, stratify=y, random_state=rng
    )


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
    if n_samples is not None and n_samples > len(y):
        raise ValueError(
            f"n_samples={n_samples} exceeds the {len(y)} samples of the "
            "'digits' dataset."
        )
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
    args.seed = int(rng.randint(np.iinfo(np.int32).max))
    with _preserved_global_rng():
        raw = make_dataset(args)
    X = np.concatenate([raw["x"], raw["x_test"]])
    y = np.concatenate([raw["y"], raw["y_test"]])
    return _subsample(X, y, n_samples, rng)


def _load_synthetic(n_samples, rng):
    return make_classification(
        n_samples=_SYNTHETIC_DEFAULT_SAMPLES if n_samples is None else n_samples,
        n_features=64,
        n_informative=32,
        n_classes=10,
        class_sep=1.5,
        flip_y=0.0,
        random_state=rng,
    )


@dataclass(frozen=True)
class _DatasetSpec:
    loader: Callable
    n_classes: int
    image_shape: Optional[tuple]
    input_bounds: Optional[tuple]
    standardize: bool
    description: str


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
    "synthetic": _DatasetSpec(
        loader=_load_synthetic,
        n_classes=10,
        image_shape=None,
        input_bounds=None,
        standardize=True,
        description=(
            "A 10-class, 64-feature Gaussian classification problem from "
            "make_classification, standardized with training-split statistics."
        ),
    ),
}

DATASETS = tuple(_SPECS)


def _check_params(name, n_samples, validation_size, test_size):
    if name not in _SPECS:
        valid = ", ".join(repr(valid_name) for valid_name in DATASETS)
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
    training split only.

    Parameters
    ----------
    name : {"digits", "mnist1d", "synthetic"}, default="digits"
        Dataset to load (see :data:`DATASETS`):

        - ``"digits"``: :func:`sklearn.datasets.load_digits` (1797 samples),
          pixels scaled to [0, 1].
        - ``"mnist1d"``: MNIST-1D signals of length 40, generated locally by
          the optional ``mnist1d`` package (5000 samples by default) and
          standardized per feature. Nothing is downloaded.
        - ``"synthetic"``: :func:`sklearn.datasets.make_classification` with
          10 classes and 64 features (20000 samples by default), standardized
          per feature; meant for scale tests.

    n_samples : int, default=None
        Total number of samples before splitting. ``None`` uses the dataset's
        default size. For ``"digits"`` a stratified subsample is drawn, and a
        value above 1797 raises a ``ValueError``.

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
        If ``name="mnist1d"`` and the ``mnist1d`` package is not installed.

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
    """
    _check_params(name, n_samples, validation_size, test_size)
    spec = _SPECS[name]
    rng = check_random_state(random_state)
    X, y = spec.loader(n_samples, rng)
    splits = _split(X, y, validation_size, test_size, rng)
    if spec.standardize:
        scaler = StandardScaler().fit(splits["train"][0])
        splits = {
            key: (scaler.transform(X_split), y_split)
            for key, (X_split, y_split) in splits.items()
        }
    arrays = {}
    for key, (X_split, y_split) in splits.items():
        arrays[f"X_{key}"] = np.ascontiguousarray(X_split, dtype=np.float32)
        arrays[f"y_{key}"] = np.ascontiguousarray(y_split, dtype=np.int64)
    return Bunch(
        **arrays,
        name=name,
        image_shape=spec.image_shape,
        input_bounds=spec.input_bounds,
        n_classes=spec.n_classes,
        description=spec.description,
    )
