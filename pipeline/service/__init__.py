"""The one HTTP seam to the OpenSearch services: the client (the only user of aiohttp's client),
request bodies and response parsing. Everything above it sees `ApiResponse` and `core.errors`.

May import: core.
"""
