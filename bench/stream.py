"""Streaming a pack from its DVC remote over HTTP (issue 26) against `dvc pull` and a peer library.

A git + DVC project holds two packs (3,000 photo-sized JPEGs; MNIST's 60,000 PNGs in small
shards), pushed to a local folder remote that an HTTP server on 127.0.0.1 serves; the server is
`python -m http.server`'s handler (`SimpleHTTPRequestHandler` in a `ThreadingHTTPServer`, HTTP/1.1)
with one change: it logs every GET, so the benchmark counts what each reader fetched. Clones of the
project use that server as their DVC remote. Measured, each in its own process:

- time to the first record: `dvc pull` of the pack, then `imgpack.open` and record 0, in a fresh
  clone; against `imgpack.open(..., stream=True)` and record 0 in another fresh clone with an
  empty IMGPACK_CACHE (whole processes, as a user runs them);
- one epoch in the shard sampler's order (`ImageDataset(..., stream=True, cache_limit=a quarter of
  the pack).sampler(shuffle=True, seed=0, window=4)`, no decoding) from an empty cache, the
  server's GETs of each shard file counted; the same records in the same order from the pulled
  pack; the peer's `StreamingDataset` over the same images written with its own writer to a folder
  served the same way, its cache limited to a quarter of its data too (each timed from opening
  the dataset to its last record, after the libraries' imports);
- shuffle quality (`imgpack.read.sampler.shuffle_quality`) of the sampler's order and the peer's,
  against a full random permutation.

The peer is LitData (`litdata.StreamingDataset`, written with `litdata.optimize`): MosaicML
Streaming's package imports torchvision at `import streaming`, and the only torchvision wheels
this machine's registries have are CUDA builds, which either replace the CPU torch (pip's own
resolution: torch 2.14.1 with CUDA) or, pinned to the CPU torch 2.13.0, fail to import
("operator torchvision::nms does not exist"); mosaicml-streaming 0.13 also pins numpy < 2.2.
LitData imports torchvision only to decode images, so it is installed without it (see the
`peers` extra). LitData reads s3://, gs://, ... and local folders, not http://: its public
`register_downloader` hook gets a plain HTTP downloader here (whole-file GETs, as imgpack's).
LitData's epoch with a cache a quarter of the photo set stalls (its prefetch thread fills every
cache slot, then deletes too few consumed chunks to fetch the next one, and the reader fails with
ChunkWaitTimeoutError after 120 s; with its own local: downloader, faster, it happens not to): a
run that does not end in PEER_TIMEOUT seconds is killed, said, and measured without a cache limit.

Each pack gets `pack.shard_mb` = its image bytes / SHARDS: about 40 shards (MNIST's are 0.4 MB of
images each), so that a cache a quarter of the pack holds the sampler's window of 4 shards being
read and the next window being fetched (with `pack.shard_mb: 2` MNIST would be 9 shards and a
quarter of it would not hold one window).

`python -m bench --sections stream` runs it; `python -m bench.stream serve|first|...` are the
processes it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.data import WORK, image_paths
from bench.dvc_ops import DVC, REPO, _git_repo, _quiet
from bench.timing import IMGPACK, PYTHON, env, fmt_seconds, median, run_process

SHARDS = 40  # shards per pack: a quarter of the pack holds two windows of 4 (read + prefetched)
WINDOW = 4
SEED = 0
PEER = "LitData"
LITDATA_PIN = "litdata==0.2.76"
PEER_TIMEOUT = 60  # seconds: an epoch the peer has not finished by then has stalled


# -- the counting HTTP server ---------------------------------------------------------------------
def _serve(root: str, log: str) -> None:
    """http.server's SimpleHTTPRequestHandler on 127.0.0.1 (a free port, printed), logging
    "<status> <path>" for every GET to `log`."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    out = open(log, "a", buffering=1)  # noqa: SIM115 - open for the server's life

    class Counting(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a cloud store serves

        def log_request(self, code="-", size="-"):
            if self.command == "GET":
                with lock:
                    out.write(f"{getattr(code, 'value', code)} {self.path}\n")

        def log_message(self, format, *args):
            pass

    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed reader's socket
                super().handle_error(request, client_address)

    server = QuietServer(("127.0.0.1", 0), functools.partial(Counting, directory=root))
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Server:
    """A counting HTTP server over `root` in a subprocess, for a `with` block."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.url = ""
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.log.write_text("")
        self._process = subprocess.Popen(
            [PYTHON, "-m", "bench.stream", "serve", str(self.root), str(self.log)],
            cwd=REPO,
            env=env(),
            stdout=subprocess.PIPE,
        )
        line = self._process.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the HTTP server for {self.root} did not start")
        self.url = f"http://127.0.0.1:{int(line)}"
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()

    def mark(self) -> int:
        """Where the log stands: `gets(mark)` counts what was served after it."""
        return self.log.stat().st_size

    def gets(self, since: int = 0) -> Counter:
        """Successful GETs per path since `since`."""
        with open(self.log, "rb") as handle:
            handle.seek(since)
            lines = handle.read().decode().splitlines()
        return Counter(
            path for status, path in (line.split(" ", 1) for line in lines) if status == "200"
        )


# -- the child processes ---------------------------------------------------------------------------
def _no_decode() -> dict:
    """ImageDataset's argument for raw bytes: decode=False where the streaming API takes it."""
    import inspect

    import imgpack

    parameter = inspect.signature(imgpack.ImageDataset).parameters["decode"]
    return {"decode": False if isinstance(parameter.default, bool) else "bytes"}


def _first(pack: str, stream: bool) -> dict:
    start = time.perf_counter()
    import imgpack

    opened = imgpack.open(pack, stream=True) if stream else imgpack.open(pack)
    ready = time.perf_counter()
    data = opened[0].data
    done = time.perf_counter()
    return {"open_s": ready - start, "first_s": done - ready, "bytes": len(data)}


def _epoch_stream(pack: str, limit: int, order_out: str) -> dict:
    import imgpack

    kwargs = _no_decode()
    start = time.perf_counter()
    dataset = imgpack.ImageDataset(pack, stream=True, cache_limit=limit, **kwargs)
    sampler = dataset.sampler(shuffle=True, seed=SEED, window=WINDOW)
    ready = time.perf_counter()
    order = []
    for i in sampler:
        dataset[i]
        order.append(i)
    done = time.perf_counter()
    np.save(order_out, np.asarray(order, dtype=np.int64))
    return {"open_s": ready - start, "epoch_s": done - start, "records": len(order)}


def _epoch_local(pack: str, order_file: str) -> dict:
    import imgpack

    kwargs = _no_decode()
    order = np.load(order_file).tolist()
    start = time.perf_counter()
    dataset = imgpack.ImageDataset(pack, **kwargs)
    ready = time.perf_counter()
    for i in order:
        dataset[i]
    done = time.perf_counter()
    return {"open_s": ready - start, "epoch_s": done - start, "records": len(order)}


def _http_downloader():
    """A LitData Downloader for http:// (whole-file GETs, a keep-alive session per thread)."""
    import asyncio
    import threading

    import requests
    from litdata.streaming.downloader import Downloader

    local = threading.local()

    class HTTPDownloader(Downloader):
        def download_file(self, remote_filepath: str, local_filepath: str) -> None:
            if os.path.exists(local_filepath):
                self._notify_published(local_filepath)
                return
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            os.makedirs(os.path.dirname(local_filepath) or ".", exist_ok=True)
            tmp = self._temp_download_path(local_filepath)
            with session.get(remote_filepath, stream=True, timeout=60) as response:
                response.raise_for_status()
                with open(tmp, "wb") as out:
                    for block in response.iter_content(1 << 20):
                        out.write(block)
            self._publish_file(tmp, local_filepath)

        async def adownload_file(self, remote_filepath: str, local_filepath: str) -> None:
            await asyncio.to_thread(self.download_file, remote_filepath, local_filepath)

    return HTTPDownloader


def _litdata_write(listing: str, out: str, chunk_bytes: int) -> dict:
    from litdata import optimize

    items = json.loads(Path(listing).read_text())
    start = time.perf_counter()
    optimize(
        fn=_litdata_item,
        inputs=items,
        output_dir=out,
        chunk_bytes=chunk_bytes,
        num_workers=1,
        reorder_files=False,
        verbose=False,
    )
    return {"write_s": time.perf_counter() - start}


def _litdata_item(item: list) -> dict:
    """One record: its index in the pack and the image file's bytes, as imgpack stores them."""
    index, path = item
    with open(path, "rb") as handle:
        return {"index": index, "image": handle.read()}


def _epoch_litdata(url: str, cache: str, limit: int, order_out: str) -> dict:
    from litdata import StreamingDataset
    from litdata.streaming.downloader import register_downloader
    from litdata.streaming.resolver import Dir

    register_downloader("http://", _http_downloader(), overwrite=True)
    start = time.perf_counter()
    dataset = StreamingDataset(
        Dir(path=cache, url=url), shuffle=True, seed=SEED, max_cache_size=limit or None
    )
    ready = time.perf_counter()
    order = [item["index"] for item in dataset]
    done = time.perf_counter()
    np.save(order_out, np.asarray(order, dtype=np.int64))
    return {"open_s": ready - start, "epoch_s": done - start, "records": len(order)}


def _child(
    args: list[str], cwd: Path = REPO, extra: dict | None = None, timeout: float | None = None
) -> tuple[float, dict]:
    """Run `python -m bench.stream ARGS`: (wall seconds of the whole process, its JSON answer);
    killed after `timeout` seconds (subprocess.TimeoutExpired)."""
    environment = env()
    environment["PYTHONPATH"] = str(REPO)
    environment["LITDATA_DISABLE_VERSION_CHECK"] = "1"  # no look-up on PyPI inside the timing
    environment.update(extra or {})
    start = time.perf_counter()
    done = subprocess.run(
        [PYTHON, "-m", "bench.stream", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"{args[0]}: {said[-1] if said else f'exit {done.returncode}'}")
    return elapsed, json.loads(done.stdout.strip().splitlines()[-1])


# -- the project ------------------------------------------------------------------------------------
def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _object_path(md5: str) -> str:
    """Where DVC 3 keeps a file of this md5 on a remote, as the server's log shows it."""
    return f"/files/md5/{md5[:2]}/{md5[2:]}"


def _describe(pack: Path) -> dict:
    """The built pack's files: each shard's remote path, their sizes, and each record's shard."""
    import imgpack

    opened = imgpack.open(pack)
    try:
        names = [s["name"] for s in opened.header["shards"]]
        shard_of = np.asarray(opened.catalog.table(["shard"]).column("shard").to_numpy())
        keys = list(opened.keys())
    finally:
        opened.close()
    sizes = {name: (pack / name).stat().st_size for name in names}
    total = sum(p.stat().st_size for p in pack.iterdir() if p.is_file())
    return {
        "shard_paths": {_object_path(_md5(pack / name)): name for name in names},
        "shard_bytes": sizes,
        "pack_bytes": total,
        "shard_of": shard_of,
        "keys": keys,
    }


def _project(root: Path, datasets: dict[str, Path]) -> tuple[Path, dict]:
    project = root / "project"
    _git_repo(project)
    described = {}
    for name, raw in datasets.items():
        image_bytes = sum(os.path.getsize(p) for p in image_paths(raw))
        shard_mb = image_bytes / SHARDS / 1e6
        pack = project / f"{name}.pack"
        run_process([IMGPACK, "build", str(raw), str(pack), "--shard-mb", f"{shard_mb:.6f}"])
        _quiet([*DVC, "add", pack.name], project)
        described[name] = {
            "raw": raw,
            "images": len(image_paths(raw)),
            "image_bytes": image_bytes,
            "shard_mb": shard_mb,
            **_describe(pack),
        }
    _quiet([*DVC, "remote", "add", "-d", "local", str(root / "remote")], project)
    _quiet(["git", "add", "-A"], project)
    _quiet(["git", "commit", "-qm", "packs"], project)
    _quiet([*DVC, "push", "-q"], project)
    return project, described


def _clone(project: Path, target: Path, url: str) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    _quiet(["git", "clone", "-q", str(project), str(target)], project.parent)
    _quiet([*DVC, "remote", "add", "-d", "-f", "http", url], target)
    return target


def _peer_write(root: Path, name: str, info: dict) -> dict:
    """The same images, in pack index order, written with the peer's writer into root/name."""
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    listing = root / f"{name}-inputs.json"
    raw = info["raw"]
    listing.write_text(json.dumps([[i, str(raw / key)] for i, key in enumerate(info["keys"])]))
    chunk_bytes = max(1, info["image_bytes"] // SHARDS)
    _, answer = _child(["litdata-write", str(listing), str(out), str(chunk_bytes)])
    listing.unlink()
    chunks = {p.name: p.stat().st_size for p in out.iterdir() if p.name.endswith(".bin")}
    return {"chunks": chunks, "bytes": sum(chunks.values()), "write_s": answer["write_s"]}


def _peer_available() -> str | None:
    """None if the peer imports, else why not."""
    probe = subprocess.run(
        [PYTHON, "-c", "import litdata"], env=env(), capture_output=True, text=True
    )
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return (
        f"litdata does not import ({last}); pip install --no-deps '{LITDATA_PIN}' (the peers extra)"
    )


# -- one dataset ------------------------------------------------------------------------------------
def _per_shard(gets: Counter, shard_paths: dict[str, str]) -> list[int]:
    return [gets.get(path, 0) for path in shard_paths]


def _measure_dataset(
    name: str, info: dict, project: Path, dvc_http: Server, peer: dict | None, runs: int
) -> dict:
    root = project.parent
    pack_name = f"{name}.pack"
    max_shard = max(info["shard_bytes"].values())
    limit = max(info["pack_bytes"] // 4, 2 * max_shard)
    times: dict[str, list[float]] = {}
    detail: dict[str, list] = {}
    errors: dict[str, str] = {}

    def note(key: str, value) -> None:
        times.setdefault(key, []).append(value)

    order_file = root / f"{name}-order.npy"
    peer_order_file = root / f"{name}-peer-order.npy"
    for run in range(runs):
        # Time to the first record: dvc pull + open + record 0 against a streamed open + record 0.
        pulled = _clone(project, root / f"{name}-pulled", dvc_http.url)
        streamed = _clone(project, root / f"{name}-streamed", dvc_http.url)

        def baseline(pulled=pulled) -> None:
            pull = run_process([*DVC, "pull", "-q", f"{pack_name}.dvc"], pulled)[0]
            wall, answer = _child(["first", str(pulled / pack_name)], pulled)
            note("pull_s", pull)
            note("local_first_s", wall)
            note("baseline_s", pull + wall)
            detail.setdefault("local_first_inside", []).append(answer)

        def streaming(streamed=streamed, run=run) -> None:
            cache = root / f"cache-first-{run}"
            shutil.rmtree(cache, ignore_errors=True)
            mark = dvc_http.mark()
            try:
                wall, answer = _child(
                    ["first", str(streamed / pack_name), "--stream"],
                    streamed,
                    {"IMGPACK_CACHE": str(cache)},
                )
            except RuntimeError as exc:
                errors["first"] = str(exc)
                return
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            note("stream_first_s", wall)
            gets = dvc_http.gets(mark)
            detail.setdefault("stream_first_inside", []).append(answer)
            note("first_shard_gets", sum(_per_shard(gets, info["shard_paths"])))

        for step in (baseline, streaming) if run % 2 == 0 else (streaming, baseline):
            step()

        # One epoch: streamed (sampler order, quarter cache), pulled (same order), the peer.
        def stream_epoch(streamed=streamed, run=run) -> None:
            cache = root / f"cache-epoch-{run}"
            shutil.rmtree(cache, ignore_errors=True)
            mark = dvc_http.mark()
            out = root / f"{name}-order-{run}.npy"
            try:
                _, answer = _child(
                    ["epoch-stream", str(streamed / pack_name), str(limit), str(out)],
                    streamed,
                    {"IMGPACK_CACHE": str(cache)},
                )
            except RuntimeError as exc:
                errors["epoch"] = str(exc)
                return
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            per_shard = _per_shard(dvc_http.gets(mark), info["shard_paths"])
            note("stream_epoch_s", answer["epoch_s"])
            note("stream_open_s", answer["open_s"])
            note("gets_min", min(per_shard))
            note("gets_max", max(per_shard))
            note("gets_total", sum(per_shard))
            order = np.load(out)
            out.unlink()
            if not order_file.exists():
                np.save(order_file, order)
            elif not np.array_equal(order, np.load(order_file)):
                errors["order"] = f"run {run}'s epoch order differs from the first run's"

        def pulled_epoch(pulled=pulled) -> None:
            if not order_file.exists():  # no streamed order (yet): the sampler's, as planned
                from imgpack.read.sampler import ShardSampler

                sampler = ShardSampler(info["shard_of"], shuffle=True, seed=SEED, window=WINDOW)
                np.save(order_file, np.asarray(sampler.order(), dtype=np.int64))
                errors.setdefault(
                    "pulled_order", "the pulled pack read ShardSampler's order, not a streamed one"
                )
            _, answer = _child(["epoch-local", str(pulled / pack_name), str(order_file)], pulled)
            note("pulled_epoch_s", answer["epoch_s"])
            note("pulled_open_s", answer["open_s"])

        def peer_epoch(run=run) -> None:
            cache = root / f"peer-cache-{run}"
            mark = peer["server"].mark()
            out = root / f"{name}-peer-order-{run}.npy"
            limit = 0 if name in peer["hung"] else peer["limit"][name]  # 0: no limit
            try:
                shutil.rmtree(cache, ignore_errors=True)
                args = ["epoch-litdata", f"{peer['server'].url}/{name}", str(cache), str(limit)]
                _, answer = _child([*args, str(out)], timeout=PEER_TIMEOUT)
            except subprocess.TimeoutExpired:
                peer["hung"].add(name)
                errors["peer_quarter"] = (
                    f"{PEER}'s epoch with max_cache_size={limit} (a quarter of its chunks) did not "
                    f"end in {PEER_TIMEOUT} s: its prefetch thread filled every cache slot, then "
                    "deleted too few consumed chunks to fetch the next one (ChunkWaitTimeoutError "
                    f"after 120 s when left alone); the {PEER} row is without a cache limit"
                )
                mark = peer["server"].mark()
                shutil.rmtree(cache, ignore_errors=True)
                try:
                    _, answer = _child([*args[:-1], "0", str(out)], timeout=PEER_TIMEOUT)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    errors["peer"] = str(exc)
                    return
            except RuntimeError as exc:
                errors["peer"] = str(exc)
                return
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            gets = peer["server"].gets(mark)
            per_chunk = [gets.get(f"/{name}/{chunk}", 0) for chunk in peer["chunks"][name]]
            note("peer_epoch_s", answer["epoch_s"])
            note("peer_open_s", answer["open_s"])
            note("peer_gets_min", min(per_chunk))
            note("peer_gets_max", max(per_chunk))
            if answer["records"] != info["images"]:
                errors["peer_records"] = (
                    f"the peer read {answer['records']} records, not {info['images']}"
                )
            shutil.move(out, peer_order_file)

        steps = [stream_epoch, pulled_epoch] + ([peer_epoch] if peer else [])
        shift = run % len(steps)
        if run == 0:  # the pulled pack reads the order the streamed epoch yielded
            shift = 0
        for step in steps[shift:] + steps[:shift]:
            step()
        shutil.rmtree(pulled, ignore_errors=True)
        shutil.rmtree(streamed, ignore_errors=True)

    result = {
        "images": info["images"],
        "image_bytes": info["image_bytes"],
        "pack_bytes": info["pack_bytes"],
        "shards": len(info["shard_paths"]),
        "shard_mb": info["shard_mb"],
        "largest_shard_bytes": max_shard,
        "cache_limit": limit,
        "medians": {key: median(values) for key, values in times.items()},
        "runs": times,
        "inside": {  # seconds inside the first-record processes: import + open, then record 0
            f"{kind}_{what}": median([answer[what] for answer in answers])
            for kind, answers in (
                ("local", detail.get("local_first_inside", [])),
                ("stream", detail.get("stream_first_inside", [])),
            )
            if answers
            for what in ("open_s", "first_s")
        },
        "errors": errors,
    }
    m = result["medians"]
    ratios = {}
    if "stream_first_s" in m:
        ratios["first_over_pull"] = m["stream_first_s"] / m["baseline_s"]
    if "stream_epoch_s" in m:
        ratios["epoch_over_pulled"] = m["stream_epoch_s"] / m["pulled_epoch_s"]
        if "peer_epoch_s" in m:
            ratios["epoch_over_peer"] = m["stream_epoch_s"] / m["peer_epoch_s"]
    result["ratios"] = ratios
    result["shuffle"] = _shuffle(info["shard_of"], order_file, peer_order_file, peer)
    order_file.unlink(missing_ok=True)
    peer_order_file.unlink(missing_ok=True)
    if peer:
        result["peer"] = {
            "chunks": len(peer["chunks"][name]),
            "bytes": peer["bytes"][name],
            "cache_limit": None if name in peer["hung"] else peer["limit"][name],
            "quarter_limit": peer["limit"][name],
            "write_s": peer["write_s"][name],
        }
    return result


def _shuffle(shard_of: np.ndarray, order_file: Path, peer_file: Path, peer: dict | None) -> dict:
    """shuffle_quality of the sampler's order (the streamed epoch's, else planned), the peer's
    (its records grouped by the imgpack shard they are in: the peer's chunks hold the same runs
    of records) and a random permutation."""
    from imgpack.read.sampler import ShardSampler, shuffle_quality

    if order_file.exists():
        order = np.load(order_file)
        source = "streamed epoch"
    else:
        order = np.asarray(ShardSampler(shard_of, seed=SEED, window=WINDOW).order())
        source = "ShardSampler plan (no streamed epoch)"
    rows = {f"imgpack sampler, window {WINDOW}": shuffle_quality(order, shard_of)}
    rows[f"imgpack sampler, window {WINDOW}"]["from"] = source
    if peer and peer_file.exists():
        rows[f"{PEER} StreamingDataset(shuffle=True)"] = shuffle_quality(
            np.load(peer_file), shard_of
        )
    permutation = np.random.default_rng(SEED).permutation(len(shard_of))
    rows["random permutation"] = shuffle_quality(permutation, shard_of)
    return rows


# -- the section ------------------------------------------------------------------------------------
def measure(datasets: dict[str, Path], runs: int) -> dict:
    """`datasets`: name -> raw image folder (labels from folder names)."""
    root = WORK / "stream"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    project, described = _project(root, datasets)
    missing = _peer_available()
    peer_root = root / "peer"
    peer_root.mkdir()
    peer = None
    if missing is None:
        peer = {"chunks": {}, "bytes": {}, "limit": {}, "write_s": {}, "hung": set()}
        for name, info in described.items():
            written = _peer_write(peer_root, name, info)
            peer["chunks"][name] = written["chunks"]
            peer["bytes"][name] = written["bytes"]
            peer["write_s"][name] = written["write_s"]
            largest = max(written["chunks"].values())
            peer["limit"][name] = max(written["bytes"] // 4, 2 * largest)
    result = {
        "server": "http.server's SimpleHTTPRequestHandler in a ThreadingHTTPServer (HTTP/1.1) on "
        "127.0.0.1, logging each GET",
        "window": WINDOW,
        "seed": SEED,
        "runs": runs,
        "peer": {"name": PEER, "missing": missing},
        "datasets": {},
    }
    if peer is None:
        result["peer"]["version"] = None
    else:
        from importlib.metadata import version

        result["peer"]["version"] = version("litdata")
    with (
        Server(root / "remote", root / "remote-gets.log") as dvc_http,
        Server(peer_root, root / "peer-gets.log") as peer_http,
    ):
        if peer is not None:
            peer["server"] = peer_http
        for name, info in described.items():
            result["datasets"][name] = _measure_dataset(name, info, project, dvc_http, peer, runs)
    shutil.rmtree(root, ignore_errors=True)
    return result


# -- the report -------------------------------------------------------------------------------------
LABELS = {"photos": "photo-sized JPEGs", "mnist": "MNIST PNGs"}


def table(section: dict) -> list[str]:
    sets = section["datasets"]
    names = list(sets)
    peer = section["peer"]
    peer_name = f"{peer['name']} {peer.get('version') or ''}".strip()
    head = " | ".join(f"{LABELS.get(n, n)} ({sets[n]['images']:,})" for n in names)
    lines = [
        "#### Streaming from a DVC remote over HTTP (127.0.0.1, empty local cache)",
        "",
        f"| | {head} |",
        "|---|" + "---:|" * len(names),
    ]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(sets[n]) for n in names) + " |")

    def seconds(key: str):
        return lambda s: fmt_seconds(s["medians"][key]) if key in s["medians"] else "—"

    def ratio(key: str):
        return lambda s: f"{s['ratios'][key]:.2f}x" if key in s["ratios"] else "—"

    row(
        "pack",
        lambda s: (
            f"{s['pack_bytes'] / 1e6:.1f} MB, {s['shards']} shards of ≤ "
            f"{s['largest_shard_bytes'] / 1e6:.2f} MB"
        ),
    )
    row("`dvc pull` of the pack", seconds("pull_s"))
    row("then `imgpack.open` + record 0 (process; import + open, record 0)", _first_cell("local"))
    row(
        "`imgpack.open(stream=True)` + record 0 (process; import + open, record 0)",
        _first_cell("stream"),
    )
    row("**first record: streamed / pull + open + first**", ratio("first_over_pull"))
    row("cache_limit (a quarter of the pack)", lambda s: f"{s['cache_limit'] / 1e6:.1f} MB")
    row(f"epoch streamed, sampler window {section['window']} (of which open)", _with_open("stream"))
    row("epoch from the pulled pack, same order", _with_open("pulled"))
    row(f"epoch {peer_name} `StreamingDataset`, shuffled, cache a quarter", _with_open("peer"))
    row("**epoch: streamed / pulled**", ratio("epoch_over_pulled"))
    row(f"**epoch: streamed / {peer['name']}**", ratio("epoch_over_peer"))
    row("GETs per shard file in the epoch (min–max)", _gets("gets"))
    row(f"{peer['name']}: GETs per chunk file (min–max)", _gets("peer_gets"))
    lines += [
        "",
        f"Every time is the median of {section['runs']} run(s); each run uses fresh clones and an "
        "empty cache. The first-record times are whole processes (Python start-up and imports "
        "included, as a user runs them); the epochs are timed inside their process, from opening "
        "the dataset to its last record, without decoding. The server is "
        f"{section['server']}.",
    ]
    if peer.get("missing"):
        lines += ["", f"No peer measured: {peer['missing']}."]
    for n in names:
        for what, text in sets[n].get("errors", {}).items():
            lines += ["", f"*{LABELS.get(n, n)}, {what}*: `{' '.join(text.split())[:400]}`"]
    lines += [
        "",
        "Shuffle quality (`imgpack.read.sampler.shuffle_quality`, batches of 32): how far apart "
        "records of one imgpack shard land in the epoch's order.",
        "",
        "| data | order | mean gap | median gap | mean span | same-shard neighbours "
        "| shards per batch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        for order, q in sets[n]["shuffle"].items():
            lines.append(
                f"| {LABELS.get(n, n)} | {order} | {q['mean_gap']:.1f} | {q['median_gap']:.0f} | "
                f"{q['mean_span']:.3f} | {q['same_shard_neighbours']:.3f} | "
                f"{q['shards_per_batch']:.1f} |"
            )
    return lines + [""]


def _first_cell(kind: str):
    def cell(s: dict) -> str:
        if f"{kind}_first_s" not in s["medians"]:
            return "—"
        inside = s.get("inside", {})
        parts = ""
        if f"{kind}_open_s" in inside:
            parts = (
                f" ({fmt_seconds(inside[f'{kind}_open_s'])}, "
                f"{fmt_seconds(inside[f'{kind}_first_s'])})"
            )
        return fmt_seconds(s["medians"][f"{kind}_first_s"]) + parts

    return cell


def _with_open(kind: str):
    def cell(s: dict) -> str:
        m = s["medians"]
        if f"{kind}_epoch_s" not in m:
            return "—"
        text = f"{fmt_seconds(m[f'{kind}_epoch_s'])} ({fmt_seconds(m[f'{kind}_open_s'])})"
        if kind == "peer" and s.get("peer", {}).get("cache_limit", 0) is None:
            text += ", no cache limit: a quarter stalled"
        return text

    return cell


def _gets(prefix: str):
    def cell(s: dict) -> str:
        runs = s["runs"]
        if f"{prefix}_min" not in runs:
            return "—"
        return f"{min(runs[f'{prefix}_min'])}–{max(runs[f'{prefix}_max'])}"

    return cell


def targets(section: dict) -> list[tuple[str, float, str, bool]]:
    """(target, measured, wanted, met) for issue 26's targets, per data set."""
    out = []
    for name, s in section["datasets"].items():
        label = LABELS.get(name, name)
        r, runs = s["ratios"], s["runs"]
        if "first_over_pull" in r:
            v = r["first_over_pull"]
            out.append(
                (f"stream: first record / (pull + open + first), {label}", v, "<= 0.2", v <= 0.2)
            )
        if "gets_max" in runs:
            low, high = min(runs["gets_min"]), max(runs["gets_max"])
            met = low == high == 1
            out.append(
                (f"stream: most GETs of one shard in an epoch, {label}", high, "1 (least 1)", met)
            )
        if "epoch_over_pulled" in r:
            v = r["epoch_over_pulled"]
            out.append((f"stream: epoch / pulled pack's epoch, {label}", v, "<= 1.2", v <= 1.2))
        if "epoch_over_peer" in r:
            v = r["epoch_over_peer"]
            unlimited = s.get("peer", {}).get("cache_limit", 0) is None
            peer = section["peer"]["name"] + (" (no cache limit)" if unlimited else "")
            out.append((f"stream: epoch / {peer}'s epoch, {label}", v, "<= 1.0", v <= 1.0))
    return out


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "serve":
        _serve(*args)
        return 0
    if command == "first":
        answer = _first(args[0], stream="--stream" in args)
    elif command == "epoch-stream":
        answer = _epoch_stream(args[0], int(args[1]), args[2])
    elif command == "epoch-local":
        answer = _epoch_local(args[0], args[1])
    elif command == "litdata-write":
        answer = _litdata_write(args[0], args[1], int(args[2]))
    elif command == "epoch-litdata":
        answer = _epoch_litdata(args[0], args[1], int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
