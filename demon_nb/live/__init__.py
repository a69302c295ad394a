"""The live instrument in the notebook: runner thread, player, audio out, controls panel,
curve editors, views and source picker (the Python side of the widgets).

``demon_nb.instrument()`` (a plain function in ``demon_nb/__init__.py``) builds,
shows and starts one; the class is :class:`demon_nb.live.instrument.Instrument`.
Widgets are imported only when an instrument is built, so importing the engine
pulls in no widget.
"""
