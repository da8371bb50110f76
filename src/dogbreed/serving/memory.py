"""The server's memory: the container's limit, what is in use, the reserve, and the budget models may take.

A multi-model server must know its memory: one load too many otherwise gets a
worker or the whole container killed by the kernel, losing every model, where
SageMaker's contract asks for a 507 and then unloads models itself.

- **Limit:** read once when the server starts. ``DOGBREED_MEMORY_LIMIT_MB``
  wins; else the cgroup's limit (v2 ``memory.max``, v1
  ``memory.limit_in_bytes``, the smallest along the process's cgroup path);
  else the host's memory.
- **In use:** the cgroup's working set (usage less the inactive file cache,
  which the kernel reclaims before it kills anything); without a cgroup limit,
  the resident memory of the server's own process tree.
- **Reserve:** what the server needs besides models (:class:`Reserve`): the
  JVM's heap, direct buffers and native footprint, the launcher's processes,
  each worker's interpreter, and the memory one request may take in each
  worker. The fixed figures below were measured in the serving image.
- **Budget:** the limit less the reserve, shared by the workers. Models are
  admitted against it by their estimated cost before loading, and charged
  their measured cost after (:class:`Ledger`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dogbreed.settings import positive_int

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value; anything past 2**60 is none.
UNLIMITED = 1 << 60

# Measured in the serving image under `docker run --memory 768m` (docs/serving.md, "Memory"), rounded up:
# the JVM's resident memory beyond its heap and direct buffers (metaspace, code cache, thread stacks, GC, netty's
# pools) was about 60 MiB idle and 87 MiB under a flood of 6 MB requests; the launcher and MMS's own Python
# command line about 19 and 17 MiB; an MMS Python worker with NumPy, Pillow and ONNX Runtime imported, under 70.
JVM_NATIVE_BYTES = 96 * MiB
LAUNCHER_BYTES = 40 * MiB
WORKER_BYTES = 72 * MiB
# Working memory of one request in a worker, measured in-process: its body and the copies made of it, and the
# tensor of one chunk (32 MiB); then either one image being decoded (DECODE_BYTES_PER_PIXEL a pixel: Pillow's
# 4-byte pixels, an EXIF turn, the RGB copy; measured 8 to 11.3) or the ONNX Runtime activations of one chunk of
# inference.RUN_CHUNK images (ResNet50 fp32 at 224 px: 35 to 57 MiB), never both at once.
REQUEST_WORKING_BYTES = 32 * MiB
DECODE_BYTES_PER_PIXEL = 12
ACTIVATION_BYTES = 64 * MiB
# Pixels one image may decode to after JPEG scaling: a 3264x2448 PNG, about 92 MiB at the peak.
DEFAULT_MAX_DECODED_PIXELS = 8_000_000


def max_decoded_pixels() -> int:
    """Pixels one image may decode to in a worker (``DOGBREED_MAX_DECODED_PIXELS``); the reserve counts on it."""
    return positive_int("DOGBREED_MAX_DECODED_PIXELS", DEFAULT_MAX_DECODED_PIXELS)


@dataclass(frozen=True)
class Reading:
    """A memory limit and what is in use under it, in bytes, and where the limit came from."""

    limit: int
    used: int
    source: str


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split() for line in lines)
    return {f[0]: int(f[1]) for f in fields if len(f) == 2 and f[1].isdigit()}


def _cgroup_paths(root: Path) -> dict[str, str]:
    """The process's cgroup path per hierarchy: ``"v2"`` for the unified one, ``"memory"`` for v1's controller."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["memory"] = path
    return paths


def _along(mount: Path, path: str) -> list[Path]:
    """The cgroup folders from the process's own up to the mount, those that exist (a container sees its own
    cgroup at the mount's root, whatever /proc/self/cgroup says)."""
    folders = []
    relative = Path(path.lstrip("/")) if path else Path()
    while True:
        folder = mount / relative
        if folder.is_dir():
            folders.append(folder)
        if relative == Path() or str(relative) == ".":
            break
        relative = relative.parent
    return folders


def _cgroup_reading(folders: list[Path], limit_file: str, usage_file: str, source: str) -> Reading | None:
    """The smallest limit along ``folders`` (the process's own cgroup first) and the working set of the first: its
    usage less the inactive file cache (v1 counts it hierarchically as ``total_inactive_file``)."""
    limits = [
        value for folder in folders if (value := _read_int(folder / limit_file)) is not None and value < UNLIMITED
    ]
    if not limits:
        return None
    usage = _read_int(folders[0] / usage_file) or 0
    stat = _stat(folders[0] / "memory.stat")
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return Reading(min(limits), max(0, usage - inactive), source)


def _cgroup_v2(root: Path, path: str) -> Reading | None:
    return _cgroup_reading(_along(root / "sys/fs/cgroup", path), "memory.max", "memory.current", "cgroup v2")


def _cgroup_v1(root: Path, path: str) -> Reading | None:
    folders = _along(root / "sys/fs/cgroup/memory", path)
    return _cgroup_reading(folders, "memory.limit_in_bytes", "memory.usage_in_bytes", "cgroup v1")


def host_total(root: Path = Path("/")) -> int:
    meminfo = _stat_kib(root / "proc/meminfo")
    return meminfo.get("MemTotal", 0)


def _stat_kib(path: Path) -> dict[str, int]:
    """/proc/meminfo-style ``Name:   1234 kB`` lines, in bytes."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        number = rest.split()
        if number and number[0].isdigit():
            values[name] = int(number[0]) * (1024 if rest.strip().endswith("kB") else 1)
    return values


def process_tree_rss(pid: int, root: Path = Path("/")) -> int:
    """Resident bytes of ``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in (root / "proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * page
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def read_memory(root: Path = Path("/"), server_pid: int | None = None) -> Reading:
    """The limit that applies to this process and what is in use under it (see the module's docstring)."""
    override = positive_int("DOGBREED_MEMORY_LIMIT_MB")
    paths = _cgroup_paths(root)
    cgroup = None
    if "v2" in paths and (root / "sys/fs/cgroup/cgroup.controllers").exists():
        cgroup = _cgroup_v2(root, paths["v2"])
    if cgroup is None and "memory" in paths:
        cgroup = _cgroup_v1(root, paths["memory"])
    tree = server_pid or positive_int("DOGBREED_SERVER_PID") or os.getpid()
    if override is not None:
        used = cgroup.used if cgroup is not None else process_tree_rss(tree, root)
        return Reading(override * MiB, used, "DOGBREED_MEMORY_LIMIT_MB")
    if cgroup is not None:
        return cgroup
    return Reading(host_total(root), process_tree_rss(tree, root), "host")


def process_rss() -> int:
    """This process's resident bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_libc: ctypes.CDLL | None = None


def return_freed_memory() -> None:
    """Hand memory that Python and ONNX Runtime freed back to the system (glibc keeps freed heap pages
    otherwise, and the cgroup counts them as used)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return
        _libc = ctypes.CDLL(name)
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


# ---- the reserve and the JVM's share ---------------------------------------------------------------------


# Request bodies the JVM may hold at once, waiting for or running in a worker, in largest requests.
QUEUED_REQUESTS = 4


@dataclass(frozen=True)
class JvmSizes:
    heap: int
    direct: int
    queued: int

    def vmargs(self) -> str:
        # No -XX:+ExitOnOutOfMemoryError: MMS answers an OutOfMemoryError on a request's thread with 507, where
        # that flag would end the JVM and every model with it.
        return f"-Xmx{self.heap // MiB}m -XX:MaxDirectMemorySize={self.direct // MiB}m -XX:+UseSerialGC"


def jvm_sizes(limit: int, max_request_bytes: int) -> JvmSizes:
    """The JVM's bounds for a limit and the largest request body. It only routes requests: a thirty-second of the
    memory for its own heap (32 MiB to 512 MiB), plus the request bodies it holds while they wait for a worker
    (``queued``: the MMS guard answers 507 past it); netty receives bodies into direct buffers, room for four of
    the largest being received at once (netty answers a request past them with 507)."""
    queued = QUEUED_REQUESTS * max_request_bytes
    heap = min(512 * MiB, max(32 * MiB, limit // 32)) + queued
    direct = max(32 * MiB, 4 * max_request_bytes)
    return JvmSizes(-(-heap // MiB) * MiB, -(-direct // MiB) * MiB, queued)


@dataclass(frozen=True)
class Reserve:
    """What the server keeps besides models, in bytes."""

    jvm: int
    launcher: int
    workers: int
    requests: int

    @property
    def total(self) -> int:
        return self.jvm + self.launcher + self.workers + self.requests


def reserve_for(jvm: JvmSizes, workers: int, max_decoded_pixels: int) -> Reserve:
    per_request = REQUEST_WORKING_BYTES + max(DECODE_BYTES_PER_PIXEL * max_decoded_pixels, ACTIVATION_BYTES)
    return Reserve(
        jvm=jvm.heap + jvm.direct + JVM_NATIVE_BYTES,
        launcher=LAUNCHER_BYTES,
        workers=WORKER_BYTES * workers,
        requests=-(-per_request // MiB) * MiB * workers,
    )


# ---- admission ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadCost:
    """What a model takes: ``steady`` once loaded, ``peak`` while ONNX Runtime builds its session."""

    steady: int
    peak: int

    @classmethod
    def of_graph(cls, graph: Path) -> LoadCost:
        """Estimated from the ONNX graph's size before loading. Measured with ONNX Runtime 1.22 (arena off,
        freed memory trimmed): a session keeps about the file's size (ResNet18 int8 11 MB: 11-18 MiB;
        ResNet50 fp32 90 MB: 90 MiB) and peaks at about twice that while it is built (ResNet50 fp32: 187-212 MiB)."""
        size = graph.stat().st_size
        return cls(steady=int(size * 1.15) + 8 * MiB, peak=2 * size + 32 * MiB)


@dataclass(frozen=True)
class Budget:
    """The bytes a worker's models may take, and the bytes the whole server may use."""

    models: int
    limit: int
    headroom: int

    @classmethod
    def from_env(cls) -> Budget | None:
        """The launcher's figures (``DOGBREED_MODEL_MEMORY_BYTES``, ``DOGBREED_MEMORY_LIMIT_BYTES``,
        ``DOGBREED_MEMORY_HEADROOM_BYTES``); None where no launcher set them."""
        models = positive_int("DOGBREED_MODEL_MEMORY_BYTES")
        limit = positive_int("DOGBREED_MEMORY_LIMIT_BYTES")
        if models is None or limit is None:
            return None
        return cls(models, limit, positive_int("DOGBREED_MEMORY_HEADROOM_BYTES", 0))


class Ledger:
    """What each loaded model costs, against a :class:`Budget`; thread-safe.

    A model fits when the recorded costs plus its steady estimate stay within
    the budget (the limit less the whole reserve, the JVM at its maximum
    included), and the memory really in use (``reader``) plus its loading
    peak stays within the limit less the headroom that requests in flight may
    still take. The second check catches what bookkeeping misses: freed
    memory that never returned to the system, another worker's growth.
    """

    def __init__(self, budget: Budget, reader: Callable[[], Reading] = read_memory):
        self.budget = budget
        self.reader = reader
        self.costs: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def charged(self) -> int:
        with self._lock:
            return sum(self.costs.values())

    def shortfall(self, cost: LoadCost) -> int:
        """Bytes missing for a model of ``cost`` to load; 0 when it fits."""
        booked = self.charged + cost.steady - self.budget.models
        real = self.reader().used + cost.peak - (self.budget.limit - self.budget.headroom)
        return max(0, booked, real)

    def fits_alone(self, cost: LoadCost) -> bool:
        return cost.steady <= self.budget.models

    def record(self, key: str, cost: int) -> None:
        with self._lock:
            self.costs[key] = max(0, cost)

    def release(self, key: str) -> int:
        with self._lock:
            return self.costs.pop(key, 0)


def describe(reading: Reading, reserve: Reserve, budget: int) -> str:
    return (
        f"memory: limit {reading.limit // MiB} MiB ({reading.source}), {reading.used // MiB} MiB in use; "
        f"reserve {reserve.total // MiB} MiB (JVM {reserve.jvm // MiB}, launcher {reserve.launcher // MiB}, "
        f"workers {reserve.workers // MiB}, "
        f"requests {reserve.requests // MiB}); models {budget // MiB} MiB"
    )
