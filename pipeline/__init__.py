"""Batch pipeline for the OpenSearch multimodal content services."""

__version__ = "0.1.0"
