"""The domain: services own transactions and never import FastAPI."""
