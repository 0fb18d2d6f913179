"""Information products (§4.2.4 i, ii, vii, viii): what most of the world sees of the registry.

Owns the SQL that aggregates the registry into the products and hands every aggregate to
``app.services.disclosure`` before anything is published: public and partner summaries
(category i), custom cross-tabulations stored and re-readable by id (ii), H3 hex-bin maps as
GeoJSON or PNG (vii), and geo-tagged points with the agreement's dimensions (viii); and
the differencing control every partner aggregate passes first (``differencing``).

Public: ``summaries``, ``analysis``, ``maps``, ``geo``, ``differencing`` (each module's
docstring names its entry points).
"""
