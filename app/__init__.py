"""National Socio-Economic Registry service."""

__version__ = "0.1.0"
