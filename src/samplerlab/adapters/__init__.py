"""Adapters for models from other libraries (optional dependencies, imported on use)."""
