"""``nser seed``: a deterministic synthetic country for demos, tests and benchmarks.

Owns the synthetic union councils and villages under the real tehsils, the household and
member generators (numpy, keyed per chunk so any seed reproduces exactly) and the COPY
loader that scores what it loads.

Public: ``loader.seed_registry``. The other modules are internal to seeding.
"""
