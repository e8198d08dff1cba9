"""OCI artifact store benchmark: apply from a registry vs from the local store, and pull throughput vs other pullers.

    python bench/oci_bench.py                                  # both parts, 3 rounds
    python bench/oci_bench.py --rounds 5 --mib 512 --oras-py /tmp/oras-py

1. apply: `sovkit apply SITE --auto-approve` of the demo site (two local-connection hosts, simulated NPUs) with
   `artifact_store.kind: local` against the same site with `kind: oci`, the registry filled by
   `sovkit bundle import --registry` and the controller cache empty (every artifact is pulled by digest, hashed
   while written, then its signature verified). A fresh site per run; the two kinds alternate. Goal <= 1.2x.
2. pull throughput: FILES synthetic files (MIB MiB in all) pushed as one ORAS-style artifact, pulled into an
   empty directory by sovkit's client (the preflight path: by digest, verified while written) and by independent
   pullers: `skopeo copy docker://… dir:` (Debian's skopeo) and, with --oras-py DIR (a `pip install --target DIR
   oras`), the oras Python SDK. The `oras` CLI (a Go binary from GitHub releases) cannot be installed here, so
   it is not measured. Goal: sovkit >= 0.8x the other pullers' MB/s.

The registry is Debian's docker-registry on loopback with TLS (test CA) and htpasswd auth (tests/registrykit.py).
Absolute times on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sovkit.artifactstore import OciStore  # noqa: E402
from sovkit.artifactstore.oci import Credentials, Registry, artifact_manifest, layer  # noqa: E402
from tests.bundlekit import SIGNER, make_bundle  # noqa: E402
from tests.registrykit import PASSWORD, USER, LoopbackRegistry, running_registry  # noqa: E402
from tests.servingkit import stop_all  # noqa: E402
from tests.sitefactory import Site, make_site  # noqa: E402

AUTH = "SOVKIT_BENCH_REGISTRY_AUTH"
REPO = "bench/site"


def run(argv: list[str | Path], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def fill_registry(reg: LoopbackRegistry, work: Path) -> None:
    """The demo site's artifacts, pushed with `sovkit bundle import --registry` (once: content-addressed)."""
    site = make_site(work / "seed")
    make_bundle(site.path, work / "bundle")
    pub = work / "bundle.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    run([sys.executable, "-m", "sovkit", "bundle", "import", work / "bundle", "--key", pub, "--registry",
         f"{reg.url}/{REPO}", "--ca", reg.ca, "--credentials-env", AUTH], {AUTH: reg.credentials})


def oci_site(work: Path, reg: LoopbackRegistry) -> Site:
    site = make_site(work)
    shutil.copy(reg.ca, site.root / "registry-ca.pem")
    site.data["artifact_store"] = {"kind": "oci", "url": reg.url, "repository": REPO, "jurisdiction": "KR-11",
                                   "ca": "registry-ca.pem", "credentials": {"env": AUTH},
                                   "path": ".sovkit/artifact-cache"}
    site.save()
    shutil.rmtree(site.store)
    return site


def bench_apply(args: argparse.Namespace, reg: LoopbackRegistry, work: Path) -> None:
    fill_registry(reg, work)
    times: dict[str, list[float]] = {"local": [], "oci": []}
    for i in range(args.rounds):
        for kind in ("local", "oci"):
            tmp = work / f"apply-{kind}-{i}"
            site = make_site(tmp) if kind == "local" else oci_site(tmp, reg)
            try:
                times[kind].append(run([sys.executable, "-m", "sovkit", "apply", site.path, "--auto-approve"],
                                       {AUTH: reg.credentials}))
            finally:
                stop_all(tmp)  # the apply started the demo's serving processes: stop them before the next run
            shutil.rmtree(tmp, ignore_errors=True)
    local, oci = statistics.median(times["local"]), statistics.median(times["oci"])
    print(f"apply, demo site (2 local hosts), {args.rounds} rounds, median wall seconds:")
    print(f"  local store   {local:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in times['local'])}")
    print(f"  oci registry  {oci:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in times['oci'])}  (cold cache)")
    print(f"  ratio oci/local = {oci / local:.3f}x   (goal <= 1.2x)")


def push_synthetic(reg: LoopbackRegistry, work: Path, files: int, mib: int) -> dict[str, str]:
    """``files`` random files, ``mib`` MiB in all, pushed as one artifact tagged ``bench``; {title: sha256}."""
    r = Registry(reg.url, REPO, reg.ca, Credentials(USER, PASSWORD))
    each = mib * (1 << 20) // files
    out: dict[str, str] = {}
    layers = []
    src = work / "synthetic"
    src.mkdir()
    for i in range(files):
        f = src / f"blob-{i}.bin"
        with f.open("wb") as fh:
            left = each
            while left:
                n = min(left, 8 << 20)
                fh.write(os.urandom(n))
                left -= n
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        r.push_blob(f, digest)
        out[f.name] = digest
        layers.append(layer(f.name, digest, each))
    r.push_bytes(b"{}")
    r.put_manifest("bench", artifact_manifest(layers))
    shutil.rmtree(src)
    return out


def sovkit_pull(reg: LoopbackRegistry, digests: dict[str, str], dest: Path) -> float:
    store = OciStore(dest, Registry(reg.url, REPO, reg.ca, Credentials(USER, PASSWORD)), "bench")
    start = time.perf_counter()
    store.fetch_many(dict(digests))  # what preflight calls: concurrent pulls, each verified while written
    return time.perf_counter() - start


def skopeo_pull(reg: LoopbackRegistry, dest: Path, work: Path) -> float:
    certs = work / "skopeo-certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(reg.ca, certs / "ca.crt")
    return run(["skopeo", "copy", "--quiet", "--src-cert-dir", certs, "--src-creds", reg.credentials,
                f"docker://127.0.0.1:{reg.port}/{REPO}:bench", f"dir:{dest}"])


ORAS_PY = """
import sys, time, oras.client
c = oras.client.OrasClient(hostname=sys.argv[1], tls_verify=sys.argv[2], auth_backend="basic")
c.login(username=sys.argv[3], password=sys.argv[4], hostname=sys.argv[1], tls_verify=sys.argv[2])
t = time.perf_counter()
c.pull(target=sys.argv[5], outdir=sys.argv[6])
print(time.perf_counter() - t)
"""


def oras_py_pull(reg: LoopbackRegistry, dest: Path, oras_dir: Path) -> float:
    proc = subprocess.run([sys.executable, "-c", ORAS_PY, f"127.0.0.1:{reg.port}", str(reg.ca), USER, PASSWORD,
                           f"127.0.0.1:{reg.port}/{REPO}:bench", str(dest)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(oras_dir)})
    if proc.returncode != 0:
        sys.exit(f"oras-py pull failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench_pull(args: argparse.Namespace, reg: LoopbackRegistry, work: Path) -> None:
    digests = push_synthetic(reg, work, args.files, args.mib)
    size = args.mib * (1 << 20) // args.files * args.files / 1e6
    pullers = {"sovkit": lambda d: sovkit_pull(reg, digests, d)}
    if shutil.which("skopeo"):
        pullers["skopeo copy"] = lambda d: skopeo_pull(reg, d, work)
    if args.oras_py:
        pullers["oras-py"] = lambda d: oras_py_pull(reg, d, args.oras_py)
    times: dict[str, list[float]] = {name: [] for name in pullers}
    for i in range(args.rounds):
        for name, pull in pullers.items():
            dest = work / f"pull-{name.split()[0]}-{i}"
            dest.mkdir()
            times[name].append(pull(dest))
            got = {p.name for p in dest.rglob("*") if p.is_file()}
            if name == "sovkit" and got != set(digests):
                sys.exit(f"sovkit pulled {sorted(got)}")
            shutil.rmtree(dest)
    print(f"pull, {args.files} files, {size:.0f} MB in all, {args.rounds} rounds (median; MB = 10^6 bytes):")
    rates = {name: size / statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:12s} {statistics.median(t):6.2f} s  {rates[name]:7.1f} MB/s   runs: "
              + ", ".join(f"{x:.2f}" for x in t))
    for name in rates:
        if name != "sovkit":
            print(f"  sovkit / {name} = {rates['sovkit'] / rates[name]:.3f}x   (goal >= 0.8x)")
    print("  (sovkit and oras-py: the pull loop timed in-process; skopeo: the whole process, start-up included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--oras-py", type=Path, default=None, help="directory of a `pip install --target DIR oras`")
    ap.add_argument("--skip-apply", action="store_true")
    ap.add_argument("--skip-pull", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sovkit-oci-bench-") as d:
        work = Path(d)
        with running_registry(work / "registry") as reg:
            if not args.skip_pull:
                bench_pull(args, reg, work)
            if not args.skip_apply:
                bench_apply(args, reg, work)


if __name__ == "__main__":
    main()
