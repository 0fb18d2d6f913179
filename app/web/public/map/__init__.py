"""``/map``: the public hex-bin poverty map, its legend and a table of the same."""
