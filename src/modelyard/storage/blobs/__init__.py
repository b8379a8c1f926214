"""Content-addressed blob stores behind one small interface."""

from modelyard.storage.blobs.base import BlobInfo, BlobStore, BlobUpload, UploadLeftover
from modelyard.storage.blobs.local import LocalBlobStore
from modelyard.storage.blobs.memory import MemoryBlobStore

__all__ = [
    "BlobInfo",
    "BlobStore",
    "BlobUpload",
    "LocalBlobStore",
    "MemoryBlobStore",
    "UploadLeftover",
]
