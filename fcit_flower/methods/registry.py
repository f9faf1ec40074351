"""The method table: run-config ``method`` name -> :class:`~.base.Method`.

Every module of the :mod:`fcit_flower.methods` package registers its methods when it
is imported, and :func:`get_method` imports them all the first time it is asked, so a
built-in method is one new module and nothing else. A method outside the package is
either registered by its own module before the run starts (in-process runs), or
named in the run-config by import path, ``method = "my_package.prism.Prism"`` (a
:class:`Method` subclass or instance), which both Flower apps then import.
"""

from __future__ import annotations

import importlib
import pkgutil

from fcit_flower.config import ConfigError
from fcit_flower.importing import import_object
from fcit_flower.methods.base import Method

_TABLE: dict[str, Method] = {}
_BUILTINS_LOADED = False


def register(method: Method) -> Method:
    """Add ``method`` to the table under ``method.name``; return it.

    Raises
    ------
    ValueError
        When another class already holds that name.
    """
    known = _TABLE.get(method.name)
    if known is not None and type(known).__qualname__ != type(method).__qualname__:
        raise ValueError(
            f"method name {method.name!r} is taken by {type(known).__qualname__}"
        )
    _TABLE[method.name] = method
    return method


def _load_builtins() -> None:
    """Import every module of this package once (each registers its methods)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import fcit_flower.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _BUILTINS_LOADED = True


def method_names() -> list[str]:
    """Names of the registered methods, in registration order."""
    _load_builtins()
    return list(_TABLE)


def get_method(name: str) -> Method:
    """The method registered as ``name``, or the one at import path ``name``.

    Raises
    ------
    ConfigError
        When ``name`` is neither registered nor importable as a method.
    """
    _load_builtins()
    if name in _TABLE:
        return _TABLE[name]
    if "." in name:
        found = import_object("method", name)
        if isinstance(found, type) and issubclass(found, Method):
            found = found()
        if isinstance(found, Method):
            return found
    raise ConfigError(
        f"method={name!r} is not allowed; choose one of {method_names()} or the "
        "import path of a Method subclass"
    )
