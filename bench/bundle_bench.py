"""Bundle create/verify throughput against `openssl dgst -sha256` on the same files, and peak RSS.

Two data sets (generated, deleted afterwards): one large file, and many
2 MiB files. For each: openssl over the files (one process, the baseline),
then `create_bundle` (hash + copy + fsync, process pool) and `verify_bundle`
(hash every blob, process pool), each in a child process so its peak RSS (main
process and largest pool worker) is measured alone. Prints throughput RATIOS
(ours / openssl; > 1 is faster) measured in this one run, plus the load. openssl and verify
alternate, best of three each, because the two cores are shared with other work.

    python bench/bundle_bench.py [--gib 4] [--dir /tmp/sovkit-bench]
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
ROUNDS = 3


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


def openssl(files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def copy_fsync(files: list[Path], dest: Path) -> float:
    """The disk's own bound for create: `cp` of the same files, then `sync` (create also copies + fsyncs)."""
    dest.mkdir()
    start = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def child(phase: str, listing: Path, out: Path) -> None:
    """Run one phase in this (child) process and print its time and peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    from sovkit.attest.keys import LocalSigner
    from sovkit.bundle.create import create_bundle
    from sovkit.bundle.gather import Source
    from sovkit.bundle.verify import verify_bundle

    signer = LocalSigner.from_seed(b"bench")
    files = [Path(p) for p in json.loads(listing.read_text())]
    start = time.perf_counter()
    if phase == "create":
        sources = [Source(f"artifacts/{f.parent.name}/{f.name}", f, "model") for f in files]
        create_bundle(out, sources, signer, "bench", "0" * 64)
    else:
        verify_bundle(out, [signer.public_key])
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "seconds": elapsed,
        "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def run_phase(phase: str, listing: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", phase, str(listing), str(out)], check=True,
                          capture_output=True, text=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0, help="size of each data set in GiB")
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
        print(f"generated 2 x {args.gib} GiB in {time.perf_counter() - t0:.1f}s")
        rows = []
        for name, files in sets.items():
            size = sum(f.stat().st_size for f in files)
            listing = args.dir / f"{name}.json"
            listing.write_text(json.dumps([str(f) for f in files]))
            openssl(files)  # warm the page cache the same way for everyone
            base = min(openssl(files) for _ in range(ROUNDS))
            copied = copy_fsync(files, args.dir / f"copy-{name}")
            out = args.dir / f"bundle-{name}"
            created = run_phase("create", listing, out)
            blobs = sorted((out / "blobs" / "sha256").iterdir())
            # verify vs openssl over the very same blob files, alternating, best of ROUNDS each (load is shared)
            verified: dict[str, float] = {}
            base_blobs = float("inf")
            for _ in range(ROUNDS):
                base_blobs = min(base_blobs, openssl(blobs))
                v = run_phase("verify", listing, out)
                if not verified or v["seconds"] < verified["seconds"]:
                    verified = {**v, "rss_main_mib": max(v["rss_main_mib"], verified.get("rss_main_mib", 0)),
                                "rss_worker_mib": max(v["rss_worker_mib"], verified.get("rss_worker_mib", 0))}
            shutil.rmtree(out)
            gbs = size / 1e9
            rows.append((name, len(files), gbs, base, copied, created, base_blobs, verified))
        print(f"load after: {os.getloadavg()}")
        print()
        print(f"{'data set':<9} {'files':>5} {'GB':>5} {'openssl':>8} {'cp+sync':>8} {'create':>7} {'verify':>7} "
              f"{'create/openssl':>15} {'create/cp':>10} {'verify/openssl':>15} {'peak RSS MiB main/worker':>25}")
        for name, n, gbs, base, cp, c, vbase, v in rows:
            rss = f"{max(c['rss_main_mib'], v['rss_main_mib']):.0f}/{max(c['rss_worker_mib'], v['rss_worker_mib']):.0f}"
            print(f"{name:<9} {n:>5} {gbs:>5.2f} {gbs / base:>8.3f} {gbs / cp:>8.3f} {gbs / c['seconds']:>7.3f} "
                  f"{gbs / v['seconds']:>7.3f} {base / c['seconds']:>15.2f} {cp / c['seconds']:>10.2f} "
                  f"{vbase / v['seconds']:>15.2f} {rss:>25}")
        print()
        print("columns 4-7: GB/s (openssl, verify: best of 3). Ratios are throughput ratios measured in this run "
              "(> 1 = faster); verify/openssl compares over the same blob files, create/openssl over the sources."
              "\ngoals: verify|create / openssl >= 0.8 (large), >= 1.5 (many); create copies and fsyncs every byte, "
              "openssl only reads, so create/cp shows it against the disk's copy+sync speed.")
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
