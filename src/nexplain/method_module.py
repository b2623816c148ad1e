"""A method's package that is also its API call: `nx.linear(P, Q, splits)` runs
`nexplain.api.linear`, while `nexplain.linear` stays the package of `nexplain.linear.linear`.

A package attribute and a subpackage of the same name cannot be two objects (importing any of
its modules rebinds the name), so the package itself is made callable, by its `__init__`.
"""

import importlib
import sys
import types


class MethodModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        api = importlib.import_module("nexplain.api")  # by name: no import cycle, no code-hash edge
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    sys.modules[module_name].__class__ = MethodModule
