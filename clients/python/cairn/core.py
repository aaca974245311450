"""Kubeflow Model Registry's import path: `from cairn.core import ModelRegistryAPIClient`,
as its users write `from model_registry.core import ModelRegistryAPIClient`."""

from ._clients.registry import ModelRegistryAPIClient

__all__ = ["ModelRegistryAPIClient"]
