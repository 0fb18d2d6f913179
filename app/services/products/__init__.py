"""Information products (§4.2.4 i, ii, vii, viii): what most of the world sees of the registry.

Owns the SQL that aggregates the registry into the products and hands every aggregate to
``app.services.disclosure`` before anything is published: public and partner summaries
(category i), custom cross-tabulations stored and re-readable by id (ii), H3 hex-bin maps as
GeoJSON or PNG (vii), and geo-tagged points with the agreement's dimensions (viii); and
the differencing control every partner aggregate passes first (``differencing``).

The public summaries and maps are never counted on a visitor's request: the worker
refreshes a small cube of the registry (``cube``) and visitors are answered from it and
from the answers stored with each refresh (``public``).

Public: ``summaries``, ``analysis``, ``maps``, ``cube``, ``public``, ``geo``,
``differencing`` (each module's docstring names its entry points).
"""
