"""Bundle create/verify throughput against `openssl dgst -sha256` on the same files, and peak RSS.

Two data sets (generated, deleted afterwards): one large file, and many
2 MiB files. For each, --rounds rounds of, in this order: openssl over the
source files (the baseline), `cp` + `sync` of them (the disk's own copy
bound), `create_bundle` (copy + hash + final sync, as `sovkit bundle create`
does) with and without that sync, openssl over the bundle's blob files (after
an untimed pass that brings them into the page cache, which create's direct
writes bypass), and `verify_bundle` over them.
Every timed step starts after a `sync`, so no step pays for the previous
one's writeback. Our phases run in a child process each, so their peak RSS
(main process and largest pool worker) is their own. Prints throughput RATIOS
(ours / openssl; > 1 is faster) from the best round of each, all measured in
this one run, plus the load.

    python bench/bundle_bench.py [--gib 4] [--rounds 3] [--dir /tmp/sovkit-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 64 << 20


def _fill(path: Path, size: int, seed: bytes) -> None:
    span = min(BLOCK, size)
    block = (seed * (span // len(seed) + 1))[:span]
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, BLOCK)
            f.write(block[:n])
            left -= n


def generate(root: Path, gib: float) -> dict[str, list[Path]]:
    total = int(gib * (1 << 30))
    large = root / "large"
    large.mkdir(parents=True)
    _fill(large / "model.safetensors", total, os.urandom(1 << 20))
    many = root / "many"
    many.mkdir()
    size = 2 << 20
    files = []
    for i in range(total // size):
        f = many / f"shard-{i:05d}.bin"
        _fill(f, size, os.urandom(4096) + i.to_bytes(4, "big"))
        files.append(f)
    return {"large": [large / "model.safetensors"], "many": files}


OPENSSL_CPU: list[float] = []  # CPU seconds of each openssl run, in order


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def openssl(files: list[Path]) -> float:
    os.sync()
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    OPENSSL_CPU.append(_cpu(resource.RUSAGE_CHILDREN) - cpu)
    return elapsed


def copy_fsync(files: list[Path], dest: Path) -> float:
    """The disk's own bound for create: `cp` of the same files, then `sync` (create also copies + syncs)."""
    dest.mkdir()
    os.sync()
    start = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def child(phase: str, listing: Path, out: Path) -> None:
    """Run one phase in this (child) process and print its time and peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    from sovkit.bundle.create import create_bundle
    from sovkit.bundle.gather import Source
    from sovkit.bundle.verify import verify_bundle
    from sovkit.signing.keys import LocalSigner

    signer = LocalSigner.from_seed(b"bench")
    files = [Path(p) for p in json.loads(listing.read_text())]
    os.sync()
    cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if phase.startswith("create"):
        sources = [Source(f"artifacts/{f.parent.name}/{f.name}", f, "model") for f in files]
        create_bundle(out, sources, signer, "bench", "0" * 64, durable=phase == "create")
    else:
        verify_bundle(out, [signer.public_key])
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "seconds": elapsed,
        "cpu_seconds": _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu,
        "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def best(so_far: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    """The faster run's time, and the largest peak RSS seen in any run."""
    if not so_far:
        return new
    out = min(so_far, new, key=lambda r: r["seconds"])
    return {**out, "rss_main_mib": max(so_far["rss_main_mib"], new["rss_main_mib"]),
            "rss_worker_mib": max(so_far["rss_worker_mib"], new["rss_worker_mib"])}


def run_phase(phase: str, listing: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", phase, str(listing), str(out)], check=True,
                          capture_output=True, text=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0, help="size of each data set in GiB")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per data set; the best of each step counts")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sovkit-bench"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    need = 4 * args.gib * (1 << 30) * 1.05
    free = shutil.disk_usage(args.dir.parent).free
    if free < need:
        sys.exit(f"need {need / (1 << 30):.1f} GiB free under {args.dir.parent}, have {free / (1 << 30):.1f}")
    shutil.rmtree(args.dir, ignore_errors=True)
    print(f"cpus={os.cpu_count()} load(1,5,15)={os.getloadavg()} python={sys.version.split()[0]}")
    try:
        t0 = time.perf_counter()
        sets = generate(args.dir / "data", args.gib)
        print(f"generated 2 x {args.gib} GiB, {args.rounds} rounds in {time.perf_counter() - t0:.1f}s")
        rows = []
        cpu_of: dict[str, list[float]] = {}
        for name, files in sets.items():
            size = sum(f.stat().st_size for f in files)
            listing = args.dir / f"{name}.json"
            listing.write_text(json.dumps([str(f) for f in files]))
            openssl(files)  # warm the page cache the same way for everyone
            OPENSSL_CPU.clear()
            base = copied = base_blobs = float("inf")
            created: dict[str, float] = {}
            unsynced: dict[str, float] = {}
            verified: dict[str, float] = {}
            out = args.dir / f"bundle-{name}"
            for _ in range(args.rounds):  # interleaved, best of each: the machine's speed drifts
                base = min(base, openssl(files))
                copied = min(copied, copy_fsync(files, args.dir / f"copy-{name}"))
                shutil.rmtree(out, ignore_errors=True)
                unsynced = best(unsynced, run_phase("create-nosync", listing, out))
                shutil.rmtree(out)
                created = best(created, run_phase("create", listing, out))
                blobs = sorted((out / "blobs" / "sha256").iterdir())
                openssl(blobs)  # untimed: create writes around the page cache, so bring the blobs in for both
                base_blobs = min(base_blobs, openssl(blobs))
                verified = best(verified, run_phase("verify", listing, out))
            shutil.rmtree(out)
            cpu_of[name] = list(OPENSSL_CPU)
            gbs = size / 1e9
            rows.append((name, len(files), gbs, base, copied, created, unsynced, base_blobs, verified))
        print(f"load after: {os.getloadavg()}")
        print()
        print(f"{'data set':<9} {'files':>5} {'GB':>5} {'openssl':>8} {'cp+sync':>8} {'create':>7} {'nosync':>7} "
              f"{'verify':>7} {'create/openssl':>15} {'nosync/openssl':>15} {'create/cp':>10} {'verify/openssl':>15} "
              f"{'peak RSS MiB main/worker':>25}")
        for name, n, gbs, base, cp, c, u, vbase, v in rows:
            rss = "/".join(f"{max(r[k] for r in (c, u, v)):.0f}" for k in ("rss_main_mib", "rss_worker_mib"))
            print(f"{name:<9} {n:>5} {gbs:>5.2f} {gbs / base:>8.3f} {gbs / cp:>8.3f} {gbs / c['seconds']:>7.3f} "
                  f"{gbs / u['seconds']:>7.3f} {gbs / v['seconds']:>7.3f} {base / c['seconds']:>15.2f} "
                  f"{base / u['seconds']:>15.2f} {cp / c['seconds']:>10.2f} {vbase / v['seconds']:>15.2f} {rss:>25}")
        print()
        print("CPU seconds in the best round (user + system of the process and its pool; kernel writeback threads "
              "not counted):")
        for name, *_, c, u, _vbase, v in rows:
            print(f"  {name:<6} openssl {min(cpu_of[name]):.2f}  verify {v['cpu_seconds']:.2f}  "
                  f"create without sync {u['cpu_seconds']:.2f}  create {c['cpu_seconds']:.2f}")
        print()
        print(f"columns 4-8: GB/s, best of {args.rounds} interleaved rounds. Ratios are throughput ratios "
              "from this run (> 1 = faster).\ncreate = `sovkit bundle create` as shipped (copy + hash + final sync); "
              "nosync = the same without the final sync (what the CPU path costs);\n"
              "create/openssl and nosync/openssl compare over "
              "the source files, verify/openssl over the bundle's blob files; create/cp against `cp` + `sync`."
              "\ngoals: create and verify / openssl >= 0.8 (large), >= 1.5 (many); peak RSS < 256 MB.")
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
