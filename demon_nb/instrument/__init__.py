"""The notebook instrument: runner thread, audio out, controls, curves, views, source picker.

``make_instrument()`` builds, displays and starts one. ``demon_nb.instrument()`` calls it;
since importing any submodule (``demon_nb.instrument.runner`` ...) rebinds the package
attribute ``demon_nb.instrument`` to this module, the module itself is callable too, so
``demon_nb.instrument()`` keeps working after such an import. Widgets import lazily.
"""

from __future__ import annotations

import sys
import types

__all__ = ["Instrument", "make_instrument"]


def __getattr__(name: str):
    if name in __all__:
        from . import instrument

        return getattr(instrument, name)
    raise AttributeError(f"module 'demon_nb.instrument' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .instrument import make_instrument

        return make_instrument(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
