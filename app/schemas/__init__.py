"""Pydantic v2 request/response models."""
