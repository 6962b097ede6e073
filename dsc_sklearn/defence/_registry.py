"""Registries of named components: the parameter constraint and the builder.

A registry is a dict from a name to a class (:data:`~dsc_sklearn.defence.
correction.CORRECTIONS`, :data:`~dsc_sklearn.defence.thresholds.THRESHOLDS`).
The estimators' parameter validation reads it live (:class:`RegistryOptions`)
and the net builds the named class (:func:`build_registered`), so a name
registered after import is accepted.
"""

from sklearn.utils._param_validation import StrOptions

__all__ = ["RegistryOptions", "build_registered"]


class RegistryOptions(StrOptions):
    """scikit-learn's :class:`StrOptions` over the keys a registry has now.

    The options are read from ``registry`` (a dict such as
    :data:`~dsc_sklearn.defence.correction.CORRECTIONS`) each time a value
    is checked or the constraint is printed, so a name registered after
    import is accepted at the next parameter validation.

    Examples
    --------
    >>> from dsc_sklearn.defence._registry import RegistryOptions
    >>> registry = {"a": 1}
    >>> constraint = RegistryOptions(registry)
    >>> registry["b"] = 2
    >>> constraint.is_satisfied_by("b"), str(constraint)
    (True, "a str among {'a', 'b'}")
    """

    def __init__(self, registry):
        self.registry = registry
        super().__init__(set())

    @property
    def options(self):
        """The registry's keys: a live, set-like view in registration order."""
        return self.registry.keys()

    @options.setter
    def options(self, value):
        # StrOptions.__init__ assigns the (frozen) options; the registry's keys win.
        pass


def build_registered(registry, name, base, registry_path):
    """``registry[name]()``, checked to be a ``base``.

    Parameters
    ----------
    registry : dict
        Name -> class (or any callable without arguments).
    name : str
        A key of ``registry``.
    base : type
        What the entry must build.
    registry_path : str
        The registry's import path, for the error message.

    Raises
    ------
    TypeError
        When the entry builds something that is not a ``base``.

    Examples
    --------
    >>> from dsc_sklearn.defence._registry import build_registered
    >>> build_registered({"zero": int}, "zero", int, "NUMBERS")
    0
    """
    component = registry[name]()
    if not isinstance(component, base):
        raise TypeError(
            f"{registry_path.rpartition('.')[2]}[{name!r}] built a "
            f"{type(component).__name__}, not a {base.__name__}: register a subclass of "
            f"{base.__module__}.{base.__name__} in {registry_path}."
        )
    return component
