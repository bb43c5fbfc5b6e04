#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into the benchmark report: a chart of events/s against
batch size per storage (gnuplot, SVG) and a table of ratios against the baselines, written
between the report markers of bench/README.md.

    scripts/bench_report.py RESULTS_DIR README CHART
"""
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile

# Each outbox row and the baseline it is measured against (same arguments, same binary).
PAIRS = [
    ("BM_memory_storage_enqueue", "BM_baseline_mutex_deque_push"),
    ("BM_memory_storage_drain", "BM_baseline_mutex_deque_drain"),
    ("BM_sqlite_storage_enqueue", "BM_baseline_raw_sqlite_insert"),
    ("BM_sqlite_storage_drain", "BM_baseline_raw_sqlite_drain"),
    ("BM_sqlite_storage_concurrent_enqueue", "BM_baseline_raw_sqlite_concurrent_insert"),
    ("BM_sqlite_storage_stats", "BM_baseline_raw_sqlite_count_by_status"),
    ("BM_sqlite_storage_stats_waiting", "BM_baseline_raw_sqlite_count_waiting"),
    ("BM_file_storage_enqueue", "BM_baseline_write_fdatasync"),
    ("BM_file_storage_enqueue", "BM_baseline_prealloc_write_fdatasync"),
    ("BM_file_storage_drain", "BM_baseline_file_drain"),
    ("BM_file_storage_open", "BM_baseline_read_log"),
    ("BM_file_storage_savers", "BM_baseline_write_fdatasync_savers"),
    ("BM_file_storage_savers", "BM_baseline_group_commit_savers"),
    ("BM_sqlite_storage_concurrent_enqueue", "BM_baseline_group_commit_floor"),
    ("BM_http_transport_deliver", "BM_baseline_raw_curl_multi"),
    ("BM_nats_transport_send", "BM_baseline_raw_nats_publish_async"),
    ("BM_postgres_storage_enqueue", "BM_baseline_raw_libpq_insert"),
    ("BM_postgres_storage_drain", "BM_baseline_raw_libpq_skip_locked"),
    ("BM_postgres_storage_stats", "BM_baseline_raw_libpq_count_by_status"),
]
# Enqueue rows drawn in the chart: label -> benchmark name.
CHART = {
    "memory_storage": "BM_memory_storage_enqueue",
    "mutex+deque (baseline)": "BM_baseline_mutex_deque_push",
    "sqlite_storage": "BM_sqlite_storage_enqueue",
    "raw SQLite (baseline)": "BM_baseline_raw_sqlite_insert",
    "file_storage": "BM_file_storage_enqueue",
    "write+fdatasync (baseline)": "BM_baseline_write_fdatasync",
    "write+fdatasync over zeros (baseline)": "BM_baseline_prealloc_write_fdatasync",
    "postgres_storage": "BM_postgres_storage_enqueue",
    "plain libpq (baseline)": "BM_baseline_raw_libpq_insert",
}
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
# scripts/compile_cost writes RESULTS_DIR/compile_cost.json ({"outbox_s", "std_s", "ratio"}); its
# figures are kept under this name among the rows.
COMPILE_COST = "compile_cost"


# Counters of a row shown beside the ratios: what a drain's server and clients kept busy.
CPU_COUNTERS = ("server_cores", "client_cores")


def load(results_dir: pathlib.Path):
    """name -> {args: items_per_second}, from medians when there are repetitions; the last
    file's context; name -> {args: {counter: value}} for the CPU_COUNTERS a row reports; and
    binary name -> the day it ran."""
    rows = {}
    counters = {}
    context = {}
    days = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if path.stem == COMPILE_COST:
            rows[COMPILE_COST] = data
            continue
        context = data.get("context", context)
        days[path.stem] = str(context.get("date", "?"))[:10]
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            name = b.get("run_name") or b["name"]
            ips = b.get("items_per_second")
            if ips is None:
                continue
            base, _, args = name.partition("/")
            # Keep the arguments that say what was measured, not how it was timed.
            args = "/".join(a for a in args.split("/")
                            if a not in ("real_time", "manual_time", "process_time")
                            and not a.startswith(("min_time:", "iterations:", "repeats:")))
            rows.setdefault(base, {})[args] = ips
            cpu = {c: b[c] for c in CPU_COUNTERS if c in b}
            if cpu:
                counters.setdefault(base, {})[args] = cpu
    return rows, context, counters, days


def arg_value(args: str) -> float:
    m = re.search(r":(\d+)", args)
    return float(m.group(1)) if m else 0.0


def arg_values(args: str):
    """Every number of the arguments, in order: rows sort by the first, then the next."""
    return tuple(float(v) for v in re.findall(r":(\d+)", args))


def table(rows) -> str:
    lines = ["| outbox row | events/s | baseline | events/s | ratio |", "|---|---:|---|---:|---:|"]
    for outbox_name, baseline_name in PAIRS:
        if outbox_name not in rows:
            continue
        for args in sorted(rows[outbox_name], key=arg_values):
            ours = rows[outbox_name][args]
            theirs = rows.get(baseline_name, {}).get(args)
            if theirs:
                lines.append(f"| `{outbox_name}/{args}` | {ours:,.0f} | `{baseline_name}` | {theirs:,.0f} | "
                             f"**{ours / theirs:.2f}** |")
            else:
                lines.append(f"| `{outbox_name}/{args}` | {ours:,.0f} | - | - | - |")
    return "\n".join(lines)


def pick(rows, name: str, *parts: str):
    """events/s of the row `name` whose arguments include every `key:value` in parts."""
    for args, ips in rows.get(name, {}).items():
        if all(p in args.split("/") for p in parts):
            return ips
    return None


def eight_over_one(name: str, device_sync_us: int):
    """The savers' ratio: events/s of `name` with 8 threads over 1, at one device delay."""
    device = f"device_sync_us:{device_sync_us}"
    return lambda r: ratio(pick(r, name, device, "threads:8"), pick(r, name, device, "threads:1"))


def against(name: str, baseline: str, *parts: str):
    """outbox row / its baseline, both at the arguments `parts` (say "batch:100")."""
    return lambda r: ratio(pick(r, name, *parts), pick(r, baseline, *parts))


def cost_growth(name: str):
    """The drain's cost per event at 100k over at 10k: events/s at 10k over events/s at 100k."""
    return lambda r: ratio(pick(r, name, "events:10000"), pick(r, name, "events:100000"))


def millions_per_second(name: str, *parts: str):
    """The row's events/s in millions: for targets stated in absolute throughput."""
    return lambda r: (lambda v: v / 1e6 if v else None)(pick(r, name, *parts))


def savers_targets(storage: str, name: str, floor: str):
    """The group-commit targets of a durable storage: 8 savers over 1 on this machine's disk and
    on a 1 ms device, and the bare handshake's own 8 / 1 beside them."""
    return [
        (storage, "8 savers / 1 saver, this machine's disk", ">= 5", eight_over_one(name, 0), lambda v: v >= 5),
        (storage, "8 savers / 1 saver, syncs of a 1 ms device", ">= 5", eight_over_one(name, 1000), lambda v: v >= 5),
        (storage, "context: the bare group-commit handshake's own 8 / 1, this machine's disk", "(context)",
         eight_over_one(floor, 0), None),
    ]


def seconds_for(name: str, events: int, *parts: str):
    """Seconds the row takes for `events` items: for targets stated as a duration."""
    return lambda r: (lambda v: events / v if v else None)(pick(r, name, *parts))


# The performance targets, in one table: (storage, target text, wanted, how to compute, test of
# the value). Each computes a ratio from rows of the same run (or, where the target is absolute,
# a row's throughput on this machine). A row with no test is context for the targets above it:
# the floor of group commit, about what this machine allows a storage. Each binary's targets go
# under its storage; a target whose rows did not run is left out of the report.
TARGETS = [
    # ---- memory storage and the engine's drain loop
    ("memory", "enqueue at batch 100, outbox / mutex+deque push", ">= 0.5",
     against("BM_memory_storage_enqueue", "BM_baseline_mutex_deque_push", "batch:100"),
     lambda v: v >= 0.5),
    ("memory", "drain at 100k, million events/s (this machine)", ">= 2",
     millions_per_second("BM_memory_storage_drain", "events:100000"),
     lambda v: v >= 2),
    ("memory", "context: drain at 100k, outbox / mutex+deque drain", "(context)",
     against("BM_memory_storage_drain", "BM_baseline_mutex_deque_drain", "events:100000"),
     None),
    # ---- compile time (scripts/compile_cost writes its result beside the benchmarks')
    ("compile", "TU with <outbox/outbox.hpp> + one Outbox<memory_storage, mock_transport> at -O2 / "
     "a TU of the standard headers the library uses", "<= 2.5",
     lambda r: r.get(COMPILE_COST, {}).get("ratio"),
     lambda v: v <= 2.5),
    # ---- SQLite storage
    ("SQLite", "durable enqueue at batch 100, outbox / raw SQLite", ">= 0.85",
     against("BM_sqlite_storage_enqueue", "BM_baseline_raw_sqlite_insert", "batch:100"),
     lambda v: v >= 0.85),
    ("SQLite", "drain at 100k, outbox / raw SQLite drain", ">= 0.75",
     against("BM_sqlite_storage_drain", "BM_baseline_raw_sqlite_drain", "events:100000"),
     lambda v: v >= 0.75),
    ("SQLite", "drain, cost per event at 100k / at 10k", "<= 1.2",
     cost_growth("BM_sqlite_storage_drain"),
     lambda v: v <= 1.2),
    *savers_targets("SQLite", "BM_sqlite_storage_concurrent_enqueue", "BM_baseline_group_commit_floor"),
    # ---- file storage
    ("file", "durable enqueue at batch 100, outbox / write+fdatasync", ">= 0.8",
     against("BM_file_storage_enqueue", "BM_baseline_write_fdatasync", "batch:100"),
     lambda v: v >= 0.8),
    ("file", "durable enqueue at batch 1000, outbox / write+fdatasync", ">= 0.6",
     against("BM_file_storage_enqueue", "BM_baseline_write_fdatasync", "batch:1000"),
     lambda v: v >= 0.6),
    ("file", "drain at 100k, outbox / raw file drain", ">= 0.8",
     against("BM_file_storage_drain", "BM_baseline_file_drain", "events:100000"),
     lambda v: v >= 0.8),
    ("file", "open of 1M completed + 1k pending events, seconds (this machine)", "<= 0.3",
     seconds_for("BM_file_storage_open", 1_001_000, "completed:1000000", "pending:1000"),
     lambda v: v <= 0.3),
    ("file", "context: that open / reading and checking the same log", "(context)",
     against("BM_file_storage_open", "BM_baseline_read_log", "completed:1000000", "pending:1000"),
     None),
    ("file", "drain, cost per event at 100k / at 10k", "flat (<= 1.2)",
     cost_growth("BM_file_storage_drain"),
     lambda v: v <= 1.2),
    *savers_targets("file", "BM_file_storage_savers", "BM_baseline_group_commit_savers"),
    # ---- transports
    ("HTTP", "delivery over loopback at batch 100, 8 in flight, outbox / plain libcurl multi "
     "(the in-process server shares the cores)", ">= 0.8",
     against("BM_http_transport_deliver", "BM_baseline_raw_curl_multi", "batch:100", "in_flight:8"),
     lambda v: v >= 0.8),
    ("NATS", "batch 100 into JetStream, transport / raw nats.c async publishes", ">= 0.8",
     against("BM_nats_transport_send", "BM_baseline_raw_nats_publish_async", "batch:100", "send_asap:0"),
     lambda v: v >= 0.8),
    # ---- PostgreSQL storage
    ("PostgreSQL", "durable enqueue at batch 100, outbox / plain libpq (same inserts, one pipelined transaction)",
     ">= 0.8",
     against("BM_postgres_storage_enqueue", "BM_baseline_raw_libpq_insert", "batch:100"),
     lambda v: v >= 0.8),
    ("PostgreSQL", "drain with 1 relay, cost per event at 100k / at 10k", "<= 1.2",
     lambda r: ratio(pick(r, "BM_postgres_storage_drain", "events:10000", "relays:1"),
                     pick(r, "BM_postgres_storage_drain", "events:100000", "relays:1")),
     lambda v: v <= 1.2),
    ("PostgreSQL", "context: the bare SKIP LOCKED queue's own cost per event at 100k / at 10k, 1 relay", "(context)",
     lambda r: ratio(pick(r, "BM_baseline_raw_libpq_skip_locked", "events:10000", "relays:1"),
                     pick(r, "BM_baseline_raw_libpq_skip_locked", "events:100000", "relays:1")),
     None),
    ("PostgreSQL", "drain of 100k, 4 relays / 1 relay", "> 1",
     lambda r: ratio(pick(r, "BM_postgres_storage_drain", "events:100000", "relays:4"),
                     pick(r, "BM_postgres_storage_drain", "events:100000", "relays:1")),
     lambda v: v > 1),
    ("PostgreSQL", "context: the bare SKIP LOCKED queue's own 4 / 1 relays, 100k", "(context)",
     lambda r: ratio(pick(r, "BM_baseline_raw_libpq_skip_locked", "events:100000", "relays:4"),
                     pick(r, "BM_baseline_raw_libpq_skip_locked", "events:100000", "relays:1")),
     None),
]


def cpu_table(counters) -> str:
    """The cores each drain row's server and clients kept busy, where the rows report them."""
    lines = ["| row | server cores | client cores |", "|---|---:|---:|"]
    for name in sorted(counters):
        for args in sorted(counters[name], key=arg_values):
            c = counters[name][args]
            lines.append(f"| `{name}/{args}` | {c.get('server_cores', 0):.2f} | {c.get('client_cores', 0):.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def ratio(a, b):
    return a / b if a and b else None


def targets(rows) -> str:
    lines = ["| storage | target | wanted | this run | met |", "|---|---|---|---:|---|"]
    for storage, what, wanted, compute, ok in TARGETS:
        value = compute(rows)
        if value is None:
            continue
        met = "-" if ok is None else ("yes" if ok(value) else "**no**")
        lines.append(f"| {storage} | {what} | {wanted} | {value:.2f} | {met} |")
    return "\n".join(lines)


def chart(rows, svg: pathlib.Path) -> bool:
    series = [(label, rows[name]) for label, name in CHART.items() if name in rows]
    if not series:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        for i, (label, points) in enumerate(series):
            data = pathlib.Path(tmp) / f"s{i}.dat"
            data.write_text("".join(f"{arg_value(a):g} {v:g}\n" for a, v in sorted(points.items(), key=lambda p: arg_value(p[0]))))
            dashed = "dt 2" if "baseline" in label else "dt 1"
            plots.append(f"'{data}' using 1:2 with linespoints lw 2 {dashed} title '{label}'")
        script = "\n".join([
            "set terminal svg size 900,520 dynamic noenhanced font 'sans,12'",
            f"set output '{svg}'",
            "set title 'Durable enqueue throughput by batch size (dashed: baselines in the same binary)'",
            "set xlabel 'events per enqueue call (batch size)'",
            "set ylabel 'events/s'",
            "set logscale xy",
            "set grid",
            "set key outside right",
            "plot " + ", ".join(plots),
        ])
        try:
            subprocess.run(["gnuplot"], input=script, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"bench_report: no chart ({e})", file=sys.stderr)
            return False
    return True


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    results_dir, readme, svg = (pathlib.Path(a) for a in sys.argv[1:])
    rows, context, counters, days = load(results_dir)
    if not rows:
        print(f"bench_report: no results in {results_dir}", file=sys.stderr)
        return 1
    have_chart = chart(rows, svg)
    machine = (f"{context.get('num_cpus', os.cpu_count())} CPUs at {context.get('mhz_per_cpu', '?')} MHz, "
               f"{platform.system()} {platform.release()} {platform.machine()}")
    if len(set(days.values())) == 1:
        when = f"on {next(iter(days.values()))}"
    else:  # `scripts/bench NAME...` reran some binaries and kept the others' results
        when = "(" + ", ".join(f"{name} on {day}" for name, day in sorted(days.items())) + ")"
    report = [BEGIN, "",
              f"Produced by `scripts/bench` {when}, {machine}. "
              "Release build; medians of the repetitions; each ratio compares two rows of the same run.",
              ""]
    probe = results_dir / "sync_probe.txt"
    if probe.exists():
        report += ["Disk regime (50 fdatasync calls before each binary; where a host throttles the disk, syncs take "
                   "milliseconds instead of about 0.1 ms, the sync dominates every durable row, ratios against the "
                   "baselines move towards 1 and group commit's gains grow):", ""]
        report += [f"- {line}" for line in probe.read_text().splitlines()] + [""]
    if "BM_postgres_storage_enqueue" in rows:
        report += ["The PostgreSQL rows run against a server that this benchmark starts on the same machine "
                   "(scripts/pg_server, a Unix socket): server and relays share its cores.", ""]
    if "BM_nats_transport_send" in rows:
        report += ["The NATS rows publish to a nats-server that this benchmark starts on the same machine: "
                   "server and client share its cores, so their absolute figures are low and only the ratio travels.", ""]
    if have_chart:
        report += [f"![events/s against batch size]({svg.name})", ""]
    report += ["The performance targets, from this run:", "", targets(rows), "",
               "Every outbox row beside its baseline (events/s; ratio = outbox / baseline):", "",
               table(rows), ""]
    if cpu_table(counters):
        report += ["CPU of the PostgreSQL drains: the cores the server's processes (from /proc) and the relays "
                   f"(the benchmark's process clock) kept busy on average, of the machine's {context.get('num_cpus', os.cpu_count())}:",
                   "", cpu_table(counters), ""]
    report += [END]
    text = readme.read_text() if readme.exists() else "# outbox benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(report) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Report\n\n" + "\n".join(report) + "\n"
    readme.write_text(text)
    print(f"bench_report: wrote {readme} and {svg if have_chart else '(no chart)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
