"""``/``: the home page (its words are in the ``base`` catalogue, with the layout)."""
