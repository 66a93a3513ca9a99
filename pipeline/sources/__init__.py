"""Catalog sources that need OSS: an `oss://BUCKET/PREFIX` listed page by page through the
official SDK, each object a record the manifest layer validates, with the upload stage's
connection settings, credentials, retries and errors. (A local folder needs none of that: it
is walked in `manifest.folder`.)

May import: core, config, manifest, upload.
"""
