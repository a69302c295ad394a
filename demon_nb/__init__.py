"""demon_nb: DEMON, a playable streaming music diffusion engine, for Jupyter."""

__version__ = "0.1.0"


def instrument(*args, **kwargs):
    """Build and display the notebook instrument (see ``demon_nb.instrument``)."""
    from .instrument import make_instrument

    return make_instrument(*args, **kwargs)
