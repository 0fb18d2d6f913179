"""Thin HTTP handlers, one module per audience/resource."""
