"""The benchmark, one command: ``python -m benchmarks.run`` (``make bench``).

Runs the Modelyard measurements against real ``modelyard serve`` subprocesses, then the same
workload against MLflow (``benchmarks/mlflow/side.py``, when present), and prints one table:
each figure, MLflow's, the ratio (how many times better Modelyard is), the target and
PASS/FAIL. Ratios, not absolute times, are what carry over between machines.

    python -m benchmarks.run [--quick] [--skip-mlflow] [--big-mib 1024]
        [--search-sizes 20000,200000] [--search-1m] [--json out.json]
        [--mlflow-json mlflow.json] [--only ui,search]

``--only ui`` measures the UI's pages alone (benchmarks/ui.py), without MLflow; a partial run
that includes ``big_file`` runs MLflow's big-file phase beside it (unless ``--skip-mlflow``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from benchmarks._common import RESOLVE_CLIENTS, sizes_arg
from benchmarks._harness import machine_info
from benchmarks.mlflow_api import TARGET_TIMES as MLFLOW_API_TIMES
from benchmarks.modelyard_side import PHASES, SEARCH_QUERIES, run_modelyard_benchmark
from benchmarks.serving import PROMOTION_TARGET_S, THROUGHPUT_TARGET_RATIO
from benchmarks.ui import P95_TARGET_MS, WEIGHT_TARGET_KB, page_key, ui_pages
from benchmarks.webhooks import LATENCY_TARGET_MS, RATE_TARGET_RATIO, SUBSCRIBERS

# Piped output (make bench | tee) would otherwise wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 150)
errors = Console(stderr=True)

RSS_LIMIT_MB = 150.0
# A big transfer's target share of min(sha256, cp) on the same file (issue 13).
BIG_SHARE = 0.85
SEARCH_1M = 1_000_000
# Server CPU per request (issue 9, point 10): steadier than wall time on a shared machine.
CPU_TARGET_MS = {"register": 1.5, "resolve": 0.15, "search": 4.0}
CPU_TARGET_SEARCH_SIZE = 20_000
Better = Literal["higher", "lower"]


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement as printed: both figures, the ratio and the verdict."""

    section: str
    label: str
    modelyard: str
    mlflow: str
    ratio: str
    target: str
    result: str
    modelyard_value: float | None
    mlflow_value: float | None
    ratio_value: float | None


def _get(data: dict[str, Any] | None, dotted: str) -> float | None:
    """``data['search']['20000']['x']`` as ``_get(data, 'search.20000.x')``; None if absent."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _mlflow_best(
    theirs: dict[str, Any] | None, key: str, better: Better
) -> tuple[float | None, str]:
    """MLflow's better figure of its default server and ``--workers 1`` (keys ending ``_w1``).

    The MLflow side measures both because multi-worker uvicorn stalls keep-alive requests on
    delayed ACKs; comparing against MLflow's best keeps every ratio conservative.
    """
    found = [
        (value, mark)
        for value, mark in ((_get(theirs, key), ""), (_get(theirs, f"{key}_w1"), " (w1)"))
        if value is not None
    ]
    if not found:
        return None, ""
    pick = max if better == "higher" else min
    return pick(found, key=lambda item: item[0])


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def _advantage(ours: float | None, theirs: float | None, better: Better) -> float | None:
    """How many times better Modelyard is (> 1 = better), whichever way 'better' points."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if better == "higher" else theirs / ours


Check = Callable[[float | None, float | None], bool | None]


def at_least_times(factor: float) -> Check:
    return lambda _ours, ratio: None if ratio is None else ratio >= factor


def at_most(limit: float | None) -> Check:
    return lambda ours, _ratio: None if ours is None or limit is None else ours <= limit


def below(limit: float) -> Check:
    return lambda ours, _ratio: None if ours is None else ours < limit


def at_least(limit: float | None) -> Check:
    return lambda ours, _ratio: None if ours is None or limit is None else ours >= limit


def _verdict(results: list[bool | None]) -> str:
    """PASS/FAIL over the checks that could be evaluated; '*' when some needed MLflow."""
    known = [r for r in results if r is not None]
    if not results:
        return "info"
    if not known:
        return "n/a"
    verdict = "PASS" if all(known) else "FAIL"
    return verdict + ("*" if len(known) < len(results) else "")


def build_rows(ours: dict[str, Any], theirs: dict[str, Any] | None) -> list[Row]:
    """Pair each Modelyard figure with MLflow's closest equivalent and judge it."""
    rows: list[Row] = []

    def add(
        section: str,
        label: str,
        key: str,
        their_key: str | None,
        unit: str,
        better: Better,
        target: str,
        checks: list[Check],
        note: str = "",
        measured_beside: bool = False,
    ) -> None:
        """One row; ``measured_beside``: MLflow's figure is ``their_key`` in our own results
        (a phase that ran MLflow's side itself, in the same run)."""
        mine = _get(ours, key)
        if measured_beside:
            other, mark = (_get(ours, their_key) if their_key else None), ""
        else:
            other, mark = _mlflow_best(theirs, their_key, better) if their_key else (None, "")
        ratio = _advantage(mine, other, better)
        rows.append(
            Row(
                section=section,
                label=label,
                modelyard=_fmt(mine, unit) + note,
                mlflow=_fmt(other, unit) + mark,
                ratio="n/a" if ratio is None else f"{ratio:,.1f}x",
                target=target,
                result=_verdict([check(mine, ratio) for check in checks]),
                modelyard_value=mine,
                mlflow_value=other,
                ratio_value=None if ratio is None else round(ratio, 2),
            )
        )

    for label, key in (
        ("serve, fresh data dir (median of 5)", "startup_s"),
        ("serve, existing data dir (median of 5)", "startup_existing_s"),
    ):
        add("start-up", label, key, key, "s", "lower", "< 2 s", [below(2.0)])
    times20 = [at_least_times(20)]
    label = f"SDK register, 1 KiB + metadata (n={int(ours.get('register_n', 0))})"
    key = "register_per_s"
    add("register", label, key, key, "/s", "higher", ">= 20x MLflow", times20)

    for label, key, target, checks in (
        ("alias, 1 client keep-alive, SDK call: p50", "resolve_p50_ms", ">= 20x faster", times20),
        ("alias, 1 client keep-alive, SDK call: p99", "resolve_p99_ms", "info", []),
        ("alias, 16 client processes: p50", "resolve16_proc_p50_ms", ">= 20x faster", times20),
        ("alias, 16 client processes: p99", "resolve16_proc_p99_ms", "info", []),
    ):
        add("resolve", label, key, key, "ms", "lower", target, checks)
    label = "alias, raw REST keep-alive, plain client: p50"
    key = "diag_resolve_raw_keepalive_p50_ms"
    add("resolve", label, "raw_resolve_p50_ms", key, "ms", "lower", ">= 20x faster", times20)
    label = "alias, 16 client processes: throughput"
    key = "resolve16_proc_rps"
    add("resolve", label, key, key, "req/s", "higher", "info", [])
    # MLflow has no such row: its figures are measured without a writer.
    for label, key, unit, better in (
        (
            "alias, 16 clients, another model registering: p50",
            "resolve16_write_p50_ms",
            "ms",
            "lower",
        ),
        (
            "alias, 16 clients, another model registering: p99",
            "resolve16_write_p99_ms",
            "ms",
            "lower",
        ),
        (
            "registrations/s of the other model meanwhile",
            "resolve16_write_registrations_per_s",
            "/s",
            "higher",
        ),
    ):
        add("resolve", label, key, None, unit, better, "info", [])

    # MLflow cannot filter registry versions by metric: its closest equivalent for a metric
    # filter is search_logged_models; for a tag filter it is search_model_versions.
    mlflow_search = {
        "metric": "logged_models_metric_ms",
        "metric_tag": "logged_models_metric_ms",
        "metric_order": "logged_models_metric_ms",
        "tag": "model_versions_tag_ms",
    }
    for size in sorted(ours.get("search", {}), key=int):
        for query, (flt, order_by) in SEARCH_QUERIES.items():
            key = f"search.{size}.{query}_ms"
            if int(size) == SEARCH_1M:  # MLflow is not seeded this far: flat against 20k
                base = _get(ours, f"search.{CPU_TARGET_SEARCH_SIZE}.{query}_ms")
                limit = None if base is None else 2 * base
                target, checks = "<= 2x its 20,000 page", [at_most(limit)]
            else:
                target, checks = ">= 5x faster", [at_least_times(5)]
            label = flt + (f" order by {order_by}" if order_by else "")
            their_key = f"search.{size}.{mlflow_search[query]}"
            add(f"search {int(size):,}", label, key, their_key, "ms", "lower", target, checks)

    cpu_rows: list[tuple[str, str, float | None]] = [
        ("per registration", "register_cpu_ms", CPU_TARGET_MS["register"]),
        ("per raw resolve", "raw_resolve_cpu_ms", CPU_TARGET_MS["resolve"]),
    ]
    for size in sorted(ours.get("search", {}), key=int):
        limit = CPU_TARGET_MS["search"] if int(size) == CPU_TARGET_SEARCH_SIZE else None
        label = f"per search page of 100, {int(size):,} versions (worst of the 4)"
        cpu_rows.append((label, f"search.{size}.cpu_ms_worst", limit))
    for label, key, limit in cpu_rows:
        target, checks = ("info", []) if limit is None else (f"<= {limit:g} ms", [at_most(limit)])
        add("server CPU", label, key, None, "ms", "lower", target, checks)

    for size in sorted(ours.get("ui", {}), key=int):
        section = f"UI pages, {int(size):,}"
        for ui_page in ui_pages():
            key = f"ui.{size}.{page_key(ui_page.label)}"
            p95 = [at_most(P95_TARGET_MS)]
            add(section, f"{ui_page.label}: p50", f"{key}.p50_ms", None, "ms", "lower", "info", [])
            add(
                section,
                f"{ui_page.label}: p95",
                f"{key}.p95_ms",
                None,
                "ms",
                "lower",
                f"<= {P95_TARGET_MS:g} ms",
                p95,
            )
            weight = _get(ours, f"{key}.weight_bytes")
            kb = None if weight is None else weight / 1024
            rows.append(
                Row(
                    section=section,
                    label=f"{ui_page.label}: HTML+CSS+JS",
                    modelyard=_fmt(kb, "KB"),
                    mlflow="-",
                    ratio="n/a",
                    target=f"<= {WEIGHT_TARGET_KB:g} KB",
                    result=_verdict([None if kb is None else kb <= WEIGHT_TARGET_KB]),
                    modelyard_value=kb,
                    mlflow_value=None,
                    ratio_value=None,
                )
            )

    via = "MLflow's client (issue 14)"
    for label, key in (
        ("register (create_model_version from runs:/)", "register"),
        ("get by alias, p50", "get_by_alias"),
        ("search_model_versions, first 100, p50", "search_versions"),
        ("search_registered_models, first 100, p50", "search_models"),
    ):
        add(
            via,
            label,
            f"mlflow_api.{key}_p50_ms",
            f"mlflow_api.mlflow_{key}_p50_ms",
            "ms",
            "lower",
            f">= {MLFLOW_API_TIMES:g}x faster",
            [at_least_times(MLFLOW_API_TIMES)],
            measured_beside=True,
        )

    hooks = "webhooks (issue 11)"
    add(
        hooks,
        "commit -> receiver: p50",
        "webhooks.latency_p50_ms",
        None,
        "ms",
        "lower",
        f"<= {LATENCY_TARGET_MS:g} ms",
        [at_most(LATENCY_TARGET_MS)],
    )
    add(
        hooks, "commit -> receiver: p99", "webhooks.latency_p99_ms", None, "ms", "lower", "info", []
    )
    burst = f"{int(_get(ours, 'webhooks.burst_events') or 0):,} events to {SUBSCRIBERS} subscribers"
    add(
        hooks,
        f"{burst}: all delivered",
        "webhooks.burst_all_delivered_s",
        None,
        "s",
        "lower",
        "info",
        [],
    )
    add(
        hooks,
        f"{burst}: duplicates",
        "webhooks.burst_duplicates",
        None,
        "",
        "lower",
        "0",
        [at_most(0)],
    )
    for label, key in (
        ("register, no subscriptions (median of blocks)", "register_per_s_no_subscriptions"),
        ("register, ten subscriptions (median of blocks)", "register_per_s_ten_subscriptions"),
    ):
        add(hooks, label, f"webhooks.{key}", None, "/s", "higher", "info", [])
    add(
        hooks,
        "register rate, ten subscriptions / none",
        "webhooks.register_rate_ratio",
        None,
        "",
        "higher",
        f">= {RATE_TARGET_RATIO:g}",
        [at_least(RATE_TARGET_RATIO)],
    )
    for label, key in (
        ("register rate, ten, receiver holding / none", "register_rate_ratio_receiver_holding"),
        ("register rate, an idle-priority busy loop / none", "register_rate_ratio_busy_loop"),
    ):
        add(hooks, label, f"webhooks.{key}", None, "", "higher", "info", [])

    served = "serve-model (issue 12)"
    for label, key, their_key, unit, better, target, checks in (
        (
            "added latency over in-process predict: p50",
            "added_p50_ms",
            None,
            "ms",
            "lower",
            "info",
            [],
        ),
        (
            "added latency over in-process predict: p99",
            "added_p99_ms",
            None,
            "ms",
            "lower",
            "info",
            [],
        ),
        (
            f"/predict, {RESOLVE_CLIENTS} client processes",
            "throughput_rps",
            "mlflow_throughput_rps",
            "/s",
            "higher",
            f">= {THROUGHPUT_TARGET_RATIO:g}x MLflow",
            [at_least_times(THROUGHPUT_TARGET_RATIO)],
        ),
        (
            "promotion -> new version serving: p50",
            "promotion_p50_s",
            None,
            "s",
            "lower",
            "info",
            [],
        ),
        (
            "promotion -> new version serving: p99",
            "promotion_p99_s",
            None,
            "s",
            "lower",
            f"<= {PROMOTION_TARGET_S:g} s",
            [at_most(PROMOTION_TARGET_S)],
        ),
        (
            "load_model, new process, warm cache (vs pyfunc, local dir)",
            "modelyard_load_s_p50",
            "mlflow_load_s_p50",
            "s",
            "lower",
            "info",
            [],
        ),
        (
            "load_model, repeated in one process",
            "modelyard_repeat_s_p50",
            "mlflow_repeat_s_p50",
            "s",
            "lower",
            "info",
            [],
        ),
    ):
        add(
            served,
            label,
            f"serving.{key}",
            their_key and f"serving.{their_key}",
            unit,
            better,
            target,
            checks,
            measured_beside=True,
        )

    big = int(ours.get("big_mib", 0))
    # The bound for a verified transfer: one sha256 pass at each end, and no faster
    # than the machine copies the file; a download also reads and writes one disk.
    floor = _get(ours, "hash_cp_mb_s")
    share = f">= 3x MLflow, >= {BIG_SHARE:.0%} of min(sha256, cp)"
    beat = [at_least_times(3), at_least(None if floor is None else BIG_SHARE * floor)]
    for label, key in (
        (f"upload {big} MiB (incl. client hashing)", "upload_mb_s"),
        (f"download {big} MiB (verified)", "download_mb_s"),
    ):
        add("big file", label, key, key, "MB/s", "higher", share, beat)
    for label, key, target, checks in (
        ("upload / min(sha256, cp)", "upload_pct_hash_cp", f">= {BIG_SHARE:.0%}", True),
        ("download / min(sha256, cp)", "download_pct_hash_cp", f">= {BIG_SHARE:.0%}", True),
        ("download / disk bound (both at once)", "download_pct_disk", "info", False),
    ):
        judge = [at_least(100 * BIG_SHARE)] if checks else []
        add("big file", label, key, None, "%", "higher", target, judge)
    for label, key in (
        ("cp of the same file (reference)", "cp_mb_s"),
        ("sha256 of the same file, hashlib (reference)", "sha256_mb_s"),
    ):
        add("big file", label, key, key, "MB/s", "higher", "info", [])
    for label, key in (
        ("disk: O_DIRECT read of the stored blob", "disk_read_mb_s"),
        ("disk: O_DIRECT write of as many bytes", "disk_write_mb_s"),
        ("disk: both at once (the download's physical bound)", "disk_both_mb_s"),
    ):
        add("big file", label, key, None, "MB/s", "higher", "info", [])
    for step in ("upload", "download"):
        for side in ("client", "server"):
            key = f"{step}_{side}_cpu_s_per_gib"
            add("big file", f"{step} CPU, {side} process", key, None, "s/GiB", "lower", "info", [])
    pct_value = _get(ours, "reupload_pct")
    add(
        "big file",
        "re-register the unchanged file",
        "reupload_s",
        "reupload_s",
        "s",
        "lower",
        "<= 2% of first",
        [lambda _o, _r: None if pct_value is None else pct_value <= 2.0],
        note="" if pct_value is None else f" ({pct_value:.2f}%)",
    )

    # MLflow has no quarter-size run to compare with.
    target = f"<= {RSS_LIMIT_MB:g} MB"
    for mib, prefix, vs_mlflow in ((big, "", True), (max(1, big // 4), "quarter_", False)):
        for step in ("upload", "download"):
            key = f"server_peak_rss_{prefix}{step}_mb"
            their_key = key if vs_mlflow else None
            label = f"peak during {mib} MiB {step}"
            add("server RSS", label, key, their_key, "MB", "lower", target, [at_most(RSS_LIMIT_MB)])
    return rows


def render(
    rows: list[Row], machine: dict[str, Any], mlflow_note: str, failures: dict[str, str]
) -> None:
    console.print(
        f"[bold]Modelyard benchmark[/bold]  {machine['date']}  git {machine['git'] or '-'}"
        f"  (modelyard imported from {machine['modelyard_from']})\n"
        f"{machine['nproc']} CPU ({machine['cpu']}), {machine['memory_gib']} GiB RAM, "
        f"Python {machine['python']}, {machine['disk_free_gib']} GiB free in "
        f"{machine['workdir']}; load average {machine['loadavg_1m_start']} at start, "
        f"{machine.get('loadavg_1m_end', '-')} at end (other work on the machine skews figures)"
        f"\nMLflow: {mlflow_note}",
        highlight=False,
    )
    table = Table(show_lines=False)
    for name, justify in (
        ("", "left"),
        ("measurement", "left"),
        ("Modelyard", "right"),
        ("MLflow", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("result", "center"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    section = ""
    for row in rows:
        if row.section != section:
            if section:
                table.add_section()
            section = row.section
        style = {"PASS": "green", "FAIL": "red"}.get(row.result.rstrip("*"), "dim")
        table.add_row(
            f"[bold]{row.section}[/bold]",
            row.label,
            row.modelyard,
            row.mlflow,
            row.ratio,
            row.target,
            f"[{style}]{row.result}[/{style}]",
        )
    console.print(table)
    for phase, message in failures.items():
        console.print(f"[red]FAILED[/red] {phase}: {message}", highlight=False)
    console.print(
        "ratio = how many times better Modelyard is (>1 is better). MB = MiB. "
        "* = only the checks not needing MLflow were evaluated. "
        "(w1) = MLflow's figure with --workers 1, better than its default server here.",
        highlight=False,
    )


def markdown(rows: list[Row]) -> str:
    """The same table as GitHub Markdown, for docs/benchmarks.md."""
    lines = [
        "| | measurement | Modelyard | MLflow | ratio | target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | :---: |",
    ]
    for row in rows:
        cells = (row.section, row.label, row.modelyard, row.mlflow, row.ratio, row.target)
        text = " | ".join(c.replace("|", "\\|") for c in cells)
        lines.append(f"| {text} | {row.result} |")
    return "\n".join(lines) + "\n"


def _run_mlflow(args: argparse.Namespace, sizes: list[int]) -> tuple[dict[str, Any] | None, str]:
    """MLflow's figures, or None and why not; never fails the Modelyard run."""
    if args.mlflow_json:
        data: dict[str, Any] = json.loads(Path(args.mlflow_json).read_text())
        figures = data.get("mlflow", data)  # our --json file, or side.py's own
        if not figures:
            return None, f"no MLflow figures in {args.mlflow_json}"
        return figures, f"mlflow {figures.get('mlflow_version', '?')}, read from {args.mlflow_json}"
    if args.skip_mlflow:
        return None, "skipped (--skip-mlflow)"
    try:
        from benchmarks.mlflow.side import run_mlflow_benchmark
    except ImportError as exc:
        return None, f"not available ({exc})"
    errors.log("MLflow side: running (its own venv and server)")
    try:
        result = run_mlflow_benchmark(
            quick=args.quick,
            big_mib=args.big_mib,
            search_sizes=sizes,
            workdir=args.workdir,
            big_only=args.only != PHASES,
        )
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return None, f"failed ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})"
    version = result.get("mlflow_version", "?")
    return result, f"mlflow {version}, measured in this run by benchmarks/mlflow/side.py"


def _phases_arg(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [phase for phase in chosen if phase not in PHASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"phases are {', '.join(PHASES)}; not {text!r}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Modelyard vs MLflow, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--skip-mlflow", action="store_true", help="Modelyard figures only")
    parser.add_argument("--big-mib", type=int, help="big file size in MiB (1024; quick 64)")
    parser.add_argument(
        "--search-sizes", type=sizes_arg(500), help="20000,200000 (quick 2000,20000)"
    )
    parser.add_argument(
        "--search-1m",
        action="store_true",
        help="also search 1,000,000 versions (Modelyard only; seeding takes minutes)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--mlflow-json", type=Path, help="MLflow figures from an earlier run (its --json file)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()), help="scratch space"
    )
    parser.add_argument(
        "--only",
        type=_phases_arg,
        default=PHASES,
        help=f"measure only these phases, comma-separated: {','.join(PHASES)} (MLflow: big_file"
        " only)",
    )
    args = parser.parse_args(argv)
    args.big_mib = args.big_mib or (64 if args.quick else 1024)
    sizes: list[int] = args.search_sizes or ([2000, 20000] if args.quick else [20000, 200000])
    if args.big_mib < 4:
        parser.error("--big-mib must be at least 4")

    ours_sizes = [*sizes, SEARCH_1M] if args.search_1m and SEARCH_1M not in sizes else sizes

    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.workdir)
    started = time.perf_counter()
    ours = run_modelyard_benchmark(
        quick=args.quick,
        big_mib=args.big_mib,
        search_sizes=ours_sizes,
        workdir=args.workdir,
        log=lambda msg: errors.log(f"Modelyard: {msg}"),
        phases=args.only,
        ui_sizes=sizes,
    )
    if args.only != PHASES and "big_file" not in args.only:
        args.skip_mlflow = True  # a partial run compares with nothing, but the big file's
    theirs, mlflow_note = _run_mlflow(args, sizes)
    machine["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    rows = build_rows(ours, theirs)
    if args.only != PHASES:  # a partial run: only what it measured
        rows = [row for row in rows if row.modelyard_value is not None]
    render(rows, machine, mlflow_note, ours.get("errors", {}))
    elapsed = round(time.perf_counter() - started, 1)
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    errors.log(f"done in {elapsed} s")
    if args.json:
        report = {
            "machine": machine,
            "args": {
                "quick": args.quick,
                "big_mib": args.big_mib,
                "search_sizes": ours_sizes,
                "phases": list(args.only),
            },
            "elapsed_s": elapsed,
            "modelyard": ours,
            "mlflow": theirs,
            "mlflow_note": mlflow_note,
            "rows": [asdict(row) for row in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if ours.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
