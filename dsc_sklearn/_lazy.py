"""Lazy public names: a package's attributes imported at first use (PEP 562).

Importing the command-line interface, or a package for one of its light
names, must not import torch: ``dsc-sklearn --help`` answers in well under
a second this way.
"""

import importlib

__all__ = ["lazy_attributes"]


def lazy_attributes(package, exports):
    """``__getattr__`` and ``__dir__`` for ``package`` that import on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict
        Public name -> the module, relative to ``package``, that defines it.

    Returns
    -------
    getattr, dir : callable
        Assign them to the package's ``__getattr__`` and ``__dir__``.
    """
    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value
        return value

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
