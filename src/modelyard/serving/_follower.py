"""The reload state machine: which version is served, and how it changes.

A ``Follower`` serves the version a reference points at. It starts from the local cache
(what this reference served last, verified again) so that it needs no registry to start,
then follows the reference through the event stream (``Registry.watch``), polling resolve
with its ETag while the stream is down. Each new version is fetched into a staging
directory and verified (``ModelCache.fetch``), loaded and warmed with its input example,
and only then swapped in: one assignment of ``current``, which requests read once, so a
request in flight finishes on the model it started with. A version that fails any step is
reported (a notice and ``modelyard_serving_reload_failures``) and the old one keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.client.registry import Registry
from modelyard.domain.errors import DigestMismatch, ModelyardError, SignatureInvalid, Unavailable
from modelyard.domain.models import Version
from modelyard.flavors import Predictor, load_directory
from modelyard.serving._cache import ModelCache
from modelyard.serving._metrics import ServingMetrics

log = logging.getLogger("modelyard.serving")

Notify = Callable[[str, dict[str, Any]], None]
RETRY_FIRST = 0.5
RETRY_LAST = 30.0


@dataclass(frozen=True, slots=True)
class Served:
    """A version loaded and warmed, with its metrics bound once (a label lookup per
    request would cost more than the counting)."""

    version: Version
    predictor: Predictor
    load_seconds: float
    loaded_at: datetime
    requests: Any
    latency: Any
    client_errors: Any
    server_errors: Any


def log_notice(event: str, fields: dict[str, Any]) -> None:
    """The default notice: a log line."""
    level = logging.WARNING if event.endswith(("failed", "unreachable", "unavailable")) else 20
    log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class Follower:
    def __init__(
        self,
        reference: str,
        registry: Registry,
        cache: ModelCache,
        metrics: ServingMetrics,
        *,
        pin: bool = False,
        offline: bool = False,
        poll_interval: float = 5.0,
        unsafe_pickle: bool = False,
        notify: Notify = log_notice,
    ) -> None:
        self.reference = reference
        self.registry = registry
        self.cache = cache
        self.metrics = metrics
        self.pin = pin
        self.offline = offline
        self.poll_interval = poll_interval
        self.unsafe_pickle = unsafe_pickle
        self.notify = notify
        self.current: Served | None = None
        self.stream_up = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._rejected: set[str] = set()  # digests that failed verification or loading
        self._pending: Version | None = None  # could not be fetched (registry down): again
        self._etag: str | None = None
        self._threads: list[threading.Thread] = []

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._run, "modelyard-serving-follow")

    def stop(self) -> None:
        self._stopped.set()
        self.registry.close()  # ends a stream being read

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        if self.offline:  # what the cache holds for the reference, and nothing else ever
            cached = self.cache.last_served(self.reference)
            if cached is not None:
                self._serve_from_cache(cached)
            else:
                self.notify("nothing_cached", {"reference": self.reference})
            return
        if self.pin:
            self._serve_pinned()
            return
        cached = self.cache.last_served(self.reference)
        if cached is not None:
            self._serve_from_cache(cached)
        self._spawn(self._poll, "modelyard-serving-poll")
        self._follow()

    def _serve_pinned(self) -> None:
        """The version the reference points at now, from the registry, else (registry
        down) what it served last; retried until one of them serves."""
        delay = RETRY_FIRST
        while not self._stopped.is_set() and self.current is None:
            try:
                self.offer(self.registry.resolve(self.reference))
            except Unavailable as exc:
                cached = self.cache.last_served(self.reference)
                if cached is not None and self._serve_from_cache(cached):
                    return
                self.notify(
                    "registry_unreachable", {"reference": self.reference, "error": exc.message}
                )
            except ModelyardError as exc:
                self.notify("resolve_failed", {"reference": self.reference, "error": exc.message})
            self._stopped.wait(delay)
            delay = min(delay * 2, RETRY_LAST)

    def _follow(self) -> None:
        """The event stream, for ever; a failure of the stream or of a resolve is waited
        out, and meanwhile ``_poll`` asks resolve."""
        delay = RETRY_FIRST
        while not self._stopped.is_set():
            current = self.current
            try:
                for version in self.registry.watch(
                    self.reference,
                    current=current.version if current else None,
                    on_connection=self._on_connection,
                ):
                    delay = RETRY_FIRST
                    self.offer(version)
                    if self._stopped.is_set():
                        return
            except ModelyardError as exc:
                self._on_connection(False)
                if self._stopped.is_set():
                    return
                self.notify("follow_failed", {"reference": self.reference, "error": exc.message})
            except Exception as exc:  # the client closed under it by stop(), or a bug
                if self._stopped.is_set():
                    return
                log.exception("following %s", self.reference)
                self.notify("follow_failed", {"reference": self.reference, "error": repr(exc)})
            self._stopped.wait(delay)
            delay = min(delay * 2, RETRY_LAST)

    def _on_connection(self, up: bool) -> None:
        self.stream_up = up

    def _poll(self) -> None:
        """While the stream is down, resolve with the last ETag (a 304 costs the registry
        next to nothing); a version whose fetch failed is tried again each interval."""
        while not self._stopped.wait(self.poll_interval):
            pending = self._pending
            if pending is not None:
                self.offer(pending)
            if self.stream_up:
                continue
            try:
                version, self._etag = self.registry.resolve_if_changed(self.reference, self._etag)
            except ModelyardError:
                continue  # down too: the cached or current version keeps serving
            if version is not None:
                self.offer(version)

    # -- changing version -----------------------------------------------------------------

    def offer(self, version: Version) -> bool:
        """Serve ``version`` unless it is served already or failed before; True when it is
        being served afterwards."""
        with self._lock:
            digest = version.manifest_digest
            current = self.current
            if current is not None and current.version.manifest_digest == digest:
                self._pending = None
                return True
            if digest in self._rejected:
                return False
            started = time.perf_counter()
            try:
                directory = self.cache.fetch(self.registry, version)
            except (DigestMismatch, SignatureInvalid) as exc:
                return self._reject(version, "verification", exc.message)
            except ModelyardError as exc:
                # Unreachable, or refused for now: not the version's fault, tried again.
                self._pending = version
                self._etag = None
                self._failed(version, "fetch", exc.message)
                return False
            except OSError as exc:
                self._pending = version
                self._failed(version, "fetch", str(exc))
                return False
            return self._load_and_swap(version, directory, started)

    def _serve_from_cache(self, version: Version) -> bool:
        with self._lock:
            started = time.perf_counter()
            try:
                directory = self.cache.verified(version)
            except DigestMismatch as exc:
                # The local copy is damaged, not the version: dropped, fetched again later.
                self.cache.discard(version)
                self._failed(version, "verification", exc.message)
                return False
            return self._load_and_swap(version, directory, started)

    def _load_and_swap(self, version: Version, directory: Path, started: float) -> bool:
        try:
            predictor = load_directory(directory, version, unsafe_pickle=self.unsafe_pickle)
        except Exception as exc:  # any library's error: this version cannot serve
            return self._reject(version, "load", _describe(exc))
        example = predictor.input_example
        if example is not None:
            try:
                predictor.predict(example)  # the first call's lazy work, off the hot path
            except Exception as exc:
                return self._reject(version, "warm", _describe(exc))
        seconds = time.perf_counter() - started
        self._swap(version, predictor, seconds)
        return True

    def _swap(self, version: Version, predictor: Predictor, seconds: float) -> None:
        m, model, number = self.metrics, version.model, str(version.version)
        served = Served(
            version=version,
            predictor=predictor,
            load_seconds=seconds,
            loaded_at=datetime.now(UTC),
            requests=m.requests.labels(model, number),
            latency=m.latency.labels(model, number),
            client_errors=m.errors.labels(model, number, "client"),
            server_errors=m.errors.labels(model, number, "server"),
        )
        old, self.current, self._pending = self.current, served, None  # the swap
        if old is not None:
            old_labels = (old.version.model, str(old.version.version), old.version.manifest_digest)
            with contextlib.suppress(KeyError):
                m.served.remove(*old_labels)
        m.served.labels(model, number, version.manifest_digest).set(1)
        m.served_version.labels(model).set(version.version)
        m.load_seconds.labels(model, number).set(seconds)
        try:
            self.cache.record_served(self.reference, version)
        except OSError as exc:  # serving goes on; only a restart without registry suffers
            self.notify("cache_failed", {"reference": self.reference, "error": str(exc)})
        fields: dict[str, Any] = {
            "reference": self.reference,
            "model": model,
            "version": version.version,
            "digest": version.manifest_digest,
            "load_seconds": round(seconds, 4),
        }
        if old is not None:
            fields["previous"] = old.version.version
        self.notify("serving", fields)

    def _reject(self, version: Version, reason: str, message: str) -> bool:
        """This version cannot serve, whatever is tried again: remembered, reported."""
        self._rejected.add(version.manifest_digest)
        if self._pending is not None and self._pending.manifest_digest == version.manifest_digest:
            self._pending = None
        self._failed(version, reason, message)
        return False

    def _failed(self, version: Version, reason: str, message: str) -> None:
        self.metrics.reload_failures.labels(version.model, str(version.version), reason).inc()
        serving = self.current
        self.notify(
            "reload_failed",
            {
                "reference": self.reference,
                "model": version.model,
                "version": version.version,
                "reason": reason,
                "error": message,
                "serving": serving.version.version if serving else None,
            },
        )


def _describe(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, ModelyardError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
