"""demon_nb: DEMON, a playable streaming music diffusion engine, for Jupyter.

``demon_nb.instrument()`` builds, shows and starts the notebook instrument; the
``demon_nb.instrument`` package is itself callable (see its docstring), and it
imports its widgets lazily, so importing the engine pulls in no widget.
"""

from . import instrument  # noqa: F401  (callable package)

__version__ = "0.1.0"
