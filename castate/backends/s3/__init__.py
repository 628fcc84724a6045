"""The S3 blob backend (``castate[s3]``): a castate store in an S3-compatible bucket, on obstore.

``backend`` is the ``BlobBackend``; ``groups`` how refs are kept in conditionally written
objects; ``client`` the URL, the obstore clients and error translation.
"""

from castate.backends.s3.backend import STORE_VERSION, S3Backend

__all__ = ["STORE_VERSION", "S3Backend"]
