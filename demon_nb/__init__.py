"""demon_nb: DEMON, a playable streaming music diffusion engine, for Jupyter.

``demon_nb.instrument()`` builds, shows and starts the notebook instrument. The
engine (``demon_nb.engine``) imports no widget; the widgets live in
``demon_nb.live`` and are imported only when an instrument is built.
"""

__version__ = "0.1.0"


def instrument(model="mini", **kwargs):
    """Build, show and start the instrument; returns it (:class:`demon_nb.live.instrument.Instrument`).

    ``model``: ``"mini"`` (built in), ``"analytic"``, ``"acestep"`` with ``checkpoints=DIR``, or a
    loaded model; other keywords as :func:`demon_nb.live.instrument.make_instrument`.
    """
    from .live.instrument import make_instrument

    return make_instrument(model, **kwargs)
