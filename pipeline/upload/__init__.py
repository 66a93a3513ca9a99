"""The upload stage: local files too big for a request body go to OSS once (content-addressed),
through the official OSS SDK, and their items go on with an `oss://` source.

May import: core, config, manifest, state.
"""
