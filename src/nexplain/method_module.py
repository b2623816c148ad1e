"""A method's module that is also its API call: `nx.linear(P, Q, splits)` runs
`nexplain.api.linear`, while `nx.linear.explain_units` stays the module's function.

A package attribute and a submodule of the same name cannot be two objects (importing the
submodule rebinds the name), so the module itself is made callable.
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
