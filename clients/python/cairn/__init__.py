"""Cairn: experiment tracking, model registry and artifact store over gRPC."""
