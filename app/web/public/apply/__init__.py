"""``/apply``: the Data Request Form (Annex I), its price guide and the status page."""
