"""Browser side of the instrument: one ES module per widget (installed as ``demon_nb.widgets``)."""
