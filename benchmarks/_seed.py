"""Fill a Modelyard SQLite database with N versions directly, so search can be timed at scale.

Registering 200k versions over HTTP would take far longer than the measurement itself, so the
rows go straight into the tables with SQLAlchemy Core bulk inserts, after the real migrations
created the schema. The shape mirrors the MLflow side's seed (same seed, same 100 models, same
teams) so that the two searches look at comparable data. The journal stays empty: nothing
here reads it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select

from benchmarks._common import SEARCH_MODELS, SEARCH_SEED, TEAMS
from modelyard.client.capture import capture_environment
from modelyard.config import Settings, open_service
from modelyard.domain.manifest import FileEntry, manifest_digest
from modelyard.domain.models import DEFAULT_STAGE
from modelyard.storage.db import tables as t

_BATCH = 20_000


def seed_search_db(
    data_dir: Path,
    n: int,
    *,
    n_models: int = SEARCH_MODELS,
    dense: int = 0,
) -> dict[str, Any]:
    """Create the schema in ``data_dir`` and insert ``n`` versions over ``n_models`` models.

    ``dense``: ``model-000`` holds exactly the first ``dense`` versions and the other models
    share the rest (the UI benchmark's model of 2,000 versions, at every size).
    """
    if dense and not dense < n:
        raise ValueError(f"a model of {dense} versions needs more than {n} in all")
    settings = Settings(data_dir=data_dir)
    service = open_service(settings)  # runs the migrations: the schema the server expects
    service.close()
    engine = create_engine(settings.effective_database_url)
    rng = random.Random(SEARCH_SEED)
    now_us = time.time_ns() // 1000
    # What the SDK attaches to every registration by default, so result pages weigh the same.
    environment = json.dumps(capture_environment().as_dict(), sort_keys=True)
    t0 = time.perf_counter()
    per_model = [0] * n_models
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(t.models),
                [
                    {
                        "id": m + 1,
                        "name": f"model-{m:03d}",
                        "description": "",
                        "latest_version": 0,
                        "created_at": now_us,
                        "updated_at": now_us,
                    }
                    for m in range(n_models)
                ],
            )
            for start in range(0, n, _BATCH):
                rows: dict[str, list[dict[str, Any]]] = {
                    "versions": [],
                    "files": [],
                    "blobs": [],
                    "metrics": [],
                    "tags": [],
                    "params": [],
                }
                for i in range(start, min(n, start + _BATCH)):
                    if not dense:
                        m = i % n_models
                    else:
                        m = 0 if i < dense else 1 + (i - dense) % (n_models - 1)
                    per_model[m] += 1
                    vid = i + 1
                    sha = hashlib.sha256(f"bench-blob-{i}".encode()).hexdigest()
                    entry = FileEntry("model.bin", 1024, sha)
                    rows["versions"].append(
                        {
                            "id": vid,
                            "model_id": m + 1,
                            "number": per_model[m],
                            "manifest_digest": manifest_digest([entry]),
                            "size": 1024,
                            "framework": None,
                            "format": None,
                            "environment": environment,
                            "run": None,
                            "creator": "bench",
                            "created_at": now_us + i,
                            "description": "",
                            "stage": DEFAULT_STAGE,
                        }
                    )
                    rows["files"].append(
                        {"version_id": vid, "path": "model.bin", "size": 1024, "sha256": sha}
                    )
                    rows["blobs"].append({"digest": sha, "size": 1024, "created_at": now_us})
                    rows["metrics"].append(
                        {"version_id": vid, "key": "auc", "value": rng.uniform(0.5, 1.0)}
                    )
                    rows["tags"].append(
                        {"version_id": vid, "key": "team", "value": TEAMS[i % len(TEAMS)]}
                    )
                    for key, value in (("lr", "0.01"), ("depth", str(i % 12)), ("opt", "adam")):
                        rows["params"].append({"version_id": vid, "key": key, "value": value})
                conn.execute(insert(t.versions), rows["versions"])
                conn.execute(insert(t.version_files), rows["files"])
                conn.execute(insert(t.blobs), rows["blobs"])
                conn.execute(insert(t.version_metrics), rows["metrics"])
                conn.execute(insert(t.version_tags), rows["tags"])
                conn.execute(insert(t.version_params), rows["params"])
            for m, count in enumerate(per_model):
                conn.execute(
                    t.models.update().where(t.models.c.id == m + 1).values(latest_version=count)
                )
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(t.versions)).scalar_one()
    finally:
        engine.dispose()
    if count != n:
        raise RuntimeError(f"seeding {n} versions left {count} rows")
    return {"versions": n, "models": n_models, "seed_s": round(time.perf_counter() - t0, 2)}
