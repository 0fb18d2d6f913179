"""``/statistics``: public summaries by province or district, as tables and SVG charts."""
