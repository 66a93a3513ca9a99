"""Batch pipeline for the OpenSearch multimodal content services.

The packages, from the bottom up (each says in its docstring what lives there and what it may
import; `tests/test_layers.py` checks the imports against it): core, config; manifest,
service, pacing, state, observe; upload; engine; cli. The emulator stands beside them.
"""

__version__ = "0.1.0"
