"""Report of scripts/bench: ratios to ext4 as markdown, the issue's targets checked, one PNG
plot per workload (gnuplot) and the raw medians as JSON."""
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess

BEGIN, END = "<!-- SUITE RESULTS BEGIN -->", "<!-- SUITE RESULTS END -->"
# Our mode -> the peer it must beat on every row (issue 8)
PEERS = {"h2-lz4": "zfs-lzjb", "h2-copies2": "zfs-copies2", "h2-enc": "gocryptfs"}


@dataclasses.dataclass
class Context:
    args: object
    suite: object
    medians: dict
    rss: dict
    failures: list
    load: tuple
    minutes: float
    metrics: dict
    workload_metrics: dict
    repo: str


def quiet(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package(name):
    return quiet(["dpkg-query", "-W", "-f=${Version}", name]) or "not installed"


def machine(ctx):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 1048576
    commit = quiet(["git", "-C", ctx.repo, "rev-parse", "--short", "HEAD"]) or "unknown"
    if quiet(["git", "-C", ctx.repo, "status", "--porcelain", "--untracked-files=no"]):
        commit += " + local changes"
    disk = quiet(["df", "--output=source,fstype", ctx.suite.workdir]).splitlines()[-1:]
    return [
        "- Machine: %s, %d cores, %.1f GiB RAM, kernel %s; workdir on %s; load average before/after %s / %s"
        % (cpu, os.cpu_count(), memory, platform.release(), " ".join(disk[0].split()) if disk else "?",
           " ".join(ctx.load[0]), " ".join(ctx.load[1])),
        "- Software: %s; commit %s; fio %s, e2fsprogs %s, btrfs-progs %s, zfs-fuse %s, gocryptfs %s, fuse3 %s"
        % (quiet(["swift", "--version"]).splitlines()[0] if quiet(["swift", "--version"]) else "swift ?",
           commit, quiet(["fio", "--version"]), package("e2fsprogs"), package("btrfs-progs"), package("zfs-fuse"),
           package("gocryptfs"), package("fuse3")),
    ]


def value(ctx, target, metric):
    return ctx.medians.get(target, {}).get(metric)


def ratio(ctx, target, metric, reference="ext4"):
    a, b = value(ctx, target, metric), value(ctx, reference, metric)
    return a / b if a is not None and b else None


def fmt(number, digits=2):
    if number is None:
        return "-"
    if abs(number) >= 100:
        return "%.0f" % number
    return "%.*f" % (digits, number)


def targets_check(ctx):
    """The issue's targets, each line: what, the numbers, met or not."""
    lines = []
    metrics = [m for w in ctx.args.workloads for m in ctx.workload_metrics[w]]

    def better(a, b, higher):
        return a >= b if higher else a <= b

    for ours, peer in PEERS.items():
        if ours not in ctx.medians or peer not in ctx.medians:
            continue
        misses = []
        for metric in metrics:
            a, b = value(ctx, ours, metric), value(ctx, peer, metric)
            if a is None or b is None:
                continue
            if not better(a, b, ctx.metrics[metric][2]):
                misses.append("%s (%s vs %s)" % (ctx.metrics[metric][0], fmt(a), fmt(b)))
        lines.append("- %s ahead of %s on every row: %s" % (ours, peer, "met" if not misses else
                                                             "NOT met: " + "; ".join(misses)))
    for ours in ("h2-none", "h2-lz4"):
        for metric, floor in (("seq_read", 0.8), ("seq_write", 0.6)):
            r = ratio(ctx, ours, metric)
            if r is not None:
                lines.append("- %s %s ≥ %.1f× ext4: %s× — %s" % (ours, ctx.metrics[metric][0], floor, fmt(r),
                                                               "met" if r >= floor else "NOT met"))
    none, lz4 = value(ctx, "h2-none", "seqcomp_write"), value(ctx, "h2-lz4", "seqcomp_write")
    if none and lz4:
        slower = none / lz4  # time with LZ4 / time without
        lines.append("- LZ4 write of compressible data within 1.3× the time of an uncompressed write: %s× — %s"
                     % (fmt(slower), "met" if slower <= 1.3 else "NOT met"))
    for metric in ("files_create", "files_stat", "files_unlink"):
        a, b = value(ctx, "h2-lz4", metric), value(ctx, "zfs-lzjb", metric)
        if a and b:
            lines.append("- %s ≥ zfs-fuse: %s vs %s files/s — %s" % (ctx.metrics[metric][0], fmt(a), fmt(b),
                                                                    "met" if a >= b else "NOT met"))
    for ours in ("h2-lz4", "h2-none", "h2-enc"):
        low = [(m, ratio(ctx, ours, m, "passthrough")) for m in metrics if m.startswith("meta_")]
        low = [(m, r) for m, r in low if r is not None]
        if low:
            misses = ["%s %s×" % (ctx.metrics[m][0], fmt(r)) for m, r in low if r < 0.9]
            lines.append("- %s every metadata operation ≥ 0.9× passthrough_ll (issue 24): %s"
                         % (ours, "met" if not misses else "NOT met: " + "; ".join(misses)))
    if ctx.rss:
        cache = ctx.args.cache_mib or default_cache_mib()
        bound = cache + 64
        peaks = ", ".join("%s %.0f" % (t, b / (1 << 20)) for t, b in sorted(ctx.rss.items()))
        worst = max(ctx.rss.values()) / (1 << 20)
        lines.append("- daemon peak RSS ≤ cache (%d MiB) + 64 MiB = %d MiB: %s MiB — %s"
                     % (cache, bound, peaks, "met" if worst <= bound else "NOT met"))
    return lines


def default_cache_mib():
    """mount_hammer2's default block cache: 1/32 of RAM, 64 to 1024 MiB."""
    kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return max(64, min(1024, kib // 1024 // 32))


def markdown(ctx):
    targets = [t for t in ctx.args.targets if t in ctx.medians]
    metrics = [m for w in ctx.args.workloads for m in ctx.workload_metrics[w]]
    a = ctx.args
    out = ["Measured %s by `scripts/bench%s` in %.0f minutes (%s; sequential %d MiB, random and mixed runs "
           "%d s, %d files, %d MiB corpus; MB = 10^6 bytes)." % (
               datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               " --runs %d" % a.runs if a.runs > 1 else "", ctx.minutes,
               "median of %d rounds" % a.runs if a.runs > 1 else "one round",
               a.seq_mib, a.rand_seconds, a.files, a.corpus_mib), ""]
    out += machine(ctx)
    out += ["", "Ratio to ext4 on a loop device (higher is better; for space, lower is better):", ""]
    out.append("| workload | " + " | ".join(targets) + " |")
    out.append("|---|" + "---:|" * len(targets))
    for metric in metrics:
        cells = []
        for t in targets:
            r = ratio(ctx, t, metric)
            cells.append(("**%s**" % fmt(r)) if t.startswith("h2-") and r is not None else fmt(r))
        out.append("| %s | %s |" % (ctx.metrics[metric][0], " | ".join(cells)))
    if "passthrough" in targets:
        meta = [m for m in metrics if m.startswith("meta_")]
        out += ["", "Ratio to libfuse's passthrough_ll over tmpfs (the FUSE ceiling; higher is better):", ""]
        out.append("| workload | " + " | ".join(targets) + " |")
        out.append("|---|" + "---:|" * len(targets))
        for metric in meta:
            cells = [fmt(ratio(ctx, t, metric, "passthrough")) for t in targets]
            out.append("| %s | %s |" % (ctx.metrics[metric][0], " | ".join(cells)))
    out += ["", "Measured values:", ""]
    out.append("| workload | unit | " + " | ".join(targets) + " |")
    out.append("|---|---|" + "---:|" * len(targets))
    for metric in metrics:
        out.append("| %s | %s | %s |" % (ctx.metrics[metric][0], ctx.metrics[metric][1],
                                         " | ".join(fmt(value(ctx, t, metric)) for t in targets)))
    out += ["", "Targets (issue 8):", ""] + targets_check(ctx)
    if ctx.failures:
        out += ["", "Failed: " + "; ".join(ctx.failures)]
    plots = [w for w in ctx.args.workloads if os.path.exists(os.path.join(ctx.repo, "docs/bench/%s.png" % w))]
    if plots and shutil.which("gnuplot"):
        out += ["", "Plots: " + ", ".join("[%s](bench/%s.png)" % (w, w) for w in ctx.args.workloads)]
    return "\n".join(out)


def plot(ctx, workload, directory):
    targets = [t for t in ctx.args.targets if t in ctx.medians and t != "ext4"]
    metrics = [m for m in ctx.workload_metrics[workload] if any(ratio(ctx, t, m) for t in targets)]
    if not targets or not metrics:
        return
    data = os.path.join(directory, "%s.dat" % workload)
    with open(data, "w") as f:
        for t in targets:
            f.write("%s %s\n" % (t, " ".join("%.4f" % ratio(ctx, t, m) if ratio(ctx, t, m) else "?" for m in metrics)))
    ratios = [ratio(ctx, t, m) for t in targets for m in metrics if ratio(ctx, t, m)]
    # Ratios from 0.01 to 100 (tmpfs, cached random reads) read better on a log scale.
    logscale = max(ratios) / min(ratios) > 50
    columns = ", ".join("'%s' using %d%s title '%s'" % (data if i == 0 else "", i + 2, ":xtic(1)" if i == 0 else "",
                                                        ctx.metrics[m][0]) for i, m in enumerate(metrics))
    script = """set terminal png size 1100,520 font ",10"
set output '%s'
set title "%s: ratio to ext4 on a loop device (1 = ext4%s)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
%s
set datafile missing "?"
set xtics rotate by -30
set key top right
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot %s
""" % (os.path.join(directory, workload + ".png"), workload,
       "; space: lower is better" if workload == "corpus" else "; higher is better",
       "set logscale y\nset yrange [*:*]" if logscale else "set yrange [0:*]", columns)
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.unlink(data)


def write(ctx, text):
    docs = os.path.join(ctx.repo, "docs")
    directory = os.path.join(docs, "bench")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"medians": ctx.medians, "peak_rss_bytes": ctx.rss, "failures": ctx.failures,
                   "options": {k: v for k, v in vars(ctx.args).items()}}, f, indent=1, sort_keys=True)
    if shutil.which("gnuplot"):
        for workload in ctx.args.workloads:
            plot(ctx, workload, directory)
        text = markdown(ctx)  # now with the plots' links
    path = os.path.join(docs, "benchmarks.md")
    doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN not in doc:
        doc += "\n%s\n%s\n" % (BEGIN, END)
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + tail)
    print("== results written to docs/benchmarks.md, docs/bench/")
