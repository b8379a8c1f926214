"""Content-addressed blob stores behind one small interface."""

from modelyard.storage.blobs.base import BlobStore, BlobUpload
from modelyard.storage.blobs.local import LocalBlobStore

__all__ = ["BlobStore", "BlobUpload", "LocalBlobStore"]
