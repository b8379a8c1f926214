"""The registry in-process: the SDK over a local data directory, no server."""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelyard.config import Settings, open_service
from modelyard.domain.models import Event, Model, Page, Version
from modelyard.domain.versions import NewVersion


class LocalTransport:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.service = open_service(Settings(data_dir=data_dir, database_url=database_url))
        try:
            self.actor = getpass.getuser()
        except (KeyError, OSError):
            self.actor = "local"

    def missing_blobs(self, digests: list[str]) -> list[str]:
        return self.service.missing_blobs(digests)

    def upload_blob(self, digest: str | None, chunks: Iterable[bytes], size: int) -> str:
        upload = self.service.begin_blob_upload(digest)
        try:
            for chunk in chunks:
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        self.service.finish_blob_upload(upload)
        return upload.digest

    def read_file(self, version: Version, path: str, sha256: str) -> Iterator[bytes]:
        entry = self.service.file_entry(version.model, version.version, path)
        return self.service.read_blob(entry.sha256)

    def register_version(self, name: str, spec: NewVersion, inline: dict[str, bytes]) -> Version:
        return self.service.register_version(name, spec, actor=self.actor, inline=inline)

    def resolve(self, reference: str) -> Version:
        return self.service.resolve(reference)

    def update_version(
        self,
        name: str,
        number: int,
        description: str | None,
        tags: dict[str, str | None] | None,
    ) -> Version:
        return self.service.update_version(
            name, number, actor=self.actor, description=description, tags=tags
        )

    def list_versions(
        self,
        name: str | None,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Version]:
        return self.service.list_versions(
            name, filter=filter, order_by=order_by, page_token=page_token, limit=limit
        )

    def create_model(self, name: str, description: str, tags: dict[str, str]) -> Model:
        return self.service.create_model(name, actor=self.actor, description=description, tags=tags)

    def get_model(self, name: str) -> Model:
        return self.service.get_model(name)

    def update_model(
        self, name: str, description: str | None, tags: dict[str, str | None] | None
    ) -> Model:
        return self.service.update_model(name, actor=self.actor, description=description, tags=tags)

    def delete_model(self, name: str) -> None:
        self.service.delete_model(name, actor=self.actor)

    def list_models(
        self,
        filter: str | None,
        order_by: str | None,
        page_token: str | None,
        limit: int | None,
    ) -> Page[Model]:
        return self.service.list_models(
            filter=filter, order_by=order_by, page_token=page_token, limit=limit
        )

    def set_alias(self, name: str, alias: str, number: int) -> Version:
        return self.service.set_alias(name, alias, number, actor=self.actor)

    def delete_alias(self, name: str, alias: str) -> None:
        self.service.delete_alias(name, alias, actor=self.actor)

    def events(self, after: int, limit: int) -> list[Event]:
        return self.service.events(after=after, limit=limit)

    def close(self) -> None:
        self.service.close()
