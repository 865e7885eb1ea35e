"""Content-addressed object store.

Layout under the cache root::

    objects/<kk>/<key>/manifest.json   written last: an object without it does not exist
    objects/<kk>/<key>/data/…          the stage's outputs, read-only
    tmp/                               objects being built (never read)
    locks/<key>.lock, .owner           per-key build locks (flock) and who holds them
    runs/<trajectory key>/             resumable scratch space of long stages
    samples/<namespace>/               per-item caches used inside stages
    logs/<key>.log                     one log per built node
    refs/<workspace id>.json           what each workspace's targets point at (gc roots)
    quarantine/                        objects that failed verification
    remote-corrupt/<key>               remote objects this cache found corrupt (the next push replaces them)

Objects are built in ``tmp/``, fsync'd and published with one ``rename``; nothing half-done is
ever visible under ``objects/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import faults
from .errors import GenesisError
from .keys import digest_file, digest_listing, list_files

MANIFEST = "manifest.json"
DATA = "data"
GROUP_SHARED = 0o002  # umask for shared caches: group-writable dirs, group-readable files


class CorruptObject(GenesisError):
    """A cached object failed verification."""


class ImmovableObject(GenesisError):
    """A corrupt object could not be moved to ``quarantine/`` (immutable or read-only directory)."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames/creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, durable: bool = True) -> None:
    """Write a file via temp file + fsync + rename (``durable=False``: no fsync, for files that
    only need to be read whole, never half-written, such as a lock's owner note)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def safe_relpath(rel: str) -> bool:
    """A manifest path must stay inside its object: relative, no ``..``, not empty."""
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid is running on this host (a zombie is not: it wrote its last)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Cache:
    """The object store at ``root`` (may be shared between workspaces, users and hosts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._manifests: dict[str, tuple[tuple[int, int, int, int], dict[str, Any]]] = {}
        self._dirs: dict[str, Path] = {}

    # ---- paths
    def object_dir(self, key: str) -> Path:
        """Directory of the object with this key (exists only once published)."""
        d = self._dirs.get(key)
        if d is None:  # memoised: a status asks several times per node, and pathlib is slow
            d = self._dirs[key] = self.root / "objects" / key[:2] / key
        return d

    def data_dir(self, key: str) -> Path:
        """The published outputs of an object."""
        return self.object_dir(key) / DATA

    def log_path(self, key: str) -> Path:
        """Build log of the object with this key."""
        return self.root / "logs" / f"{key}.log"

    def run_dir(self, trajectory: str) -> Path:
        """Resumable scratch dir for a trajectory key."""
        return self.root / "runs" / trajectory

    def is_group_shared(self) -> bool:
        """A cache root with the setgid bit (``chmod 2775``) is shared by a group of users."""
        try:
            return bool(os.stat(self.root).st_mode & stat.S_ISGID)
        except OSError:
            return False

    def ensure(self) -> None:
        """Create the cache layout (group-writable, so a shared cache works across users)."""
        old = os.umask(GROUP_SHARED)
        try:
            for sub in ("objects", "tmp", "locks", "runs", "samples", "logs", "refs", "quarantine"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)

    # ---- reading
    def has(self, key: str) -> bool:
        """True when a complete object (manifest present) exists."""
        return (self.object_dir(key) / MANIFEST).is_file()

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The object's manifest, or None when absent/unreadable (read-only: it may be shared).

        Parsed once per process while its stat signature is unchanged (a status reads each one
        twice, and one of a node over 20,000 files lists them all)."""
        path = self.object_dir(key) / MANIFEST
        try:
            st = os.stat(path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            hit = self._manifests.get(key)
            if hit is not None and hit[0] == sig:
                return hit[1]
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        self._manifests[key] = (sig, m)
        return m

    def keys(self) -> Iterator[str]:
        """Keys of all published objects."""
        objects = self.root / "objects"
        if not objects.is_dir():
            return
        for shard in sorted(objects.iterdir()):
            if shard.is_dir():
                for obj in sorted(shard.iterdir()):
                    if (obj / MANIFEST).is_file():
                        yield obj.name

    def check_quick(self, key: str) -> None:
        """Cheap pre-use check; raises CorruptObject.

        Checks existence, type and size of every listed file. Content is rehashed only when a file's
        ctime is newer than the manifest (written last at publish): an in-place edit, even one that
        keeps the size, changes ctime, and nothing can set a ctime back.
        """
        m = self.manifest(key)
        if m is None:
            raise CorruptObject(f"object {key}: manifest missing or unreadable")
        data = self.data_dir(key)
        try:
            sealed_ns = os.stat(self.object_dir(key) / MANIFEST).st_mtime_ns
        except OSError:
            raise CorruptObject(f"object {key}: manifest missing or unreadable") from None
        touched = False
        for e in m.get("outputs", []):
            if not safe_relpath(e.get("path", "")):
                raise CorruptObject(f"object {key}: manifest path {e.get('path')!r} escapes the object")
            p = data / e["path"]
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                raise CorruptObject(f"object {key}: {e['path']} is missing") from None
            if not stat.S_ISREG(st.st_mode) or st.st_size != e["size"]:
                raise CorruptObject(f"object {key}: {e['path']} has size {st.st_size}, expected {e['size']}")
            touched = touched or st.st_ctime_ns > sealed_ns
        if touched:
            problems = self.verify(key)
            if problems:
                raise CorruptObject(f"object {key}: {'; '.join(problems[:3])}")

    def verify(self, key: str) -> list[str]:
        """Rehash an object; return its problems (empty when intact)."""
        obj = self.object_dir(key)
        m = self.manifest(key)
        if m is None:
            return ["manifest missing or unreadable"]
        problems: list[str] = []
        if m.get("key") != key:
            problems.append(f"manifest key {m.get('key')} does not match directory")
        data = obj / DATA
        listed = {e["path"]: e for e in m.get("outputs", [])}
        escaping = [p for p in listed if not safe_relpath(p)]
        if escaping:
            return [f"manifest path {p!r} escapes the object" for p in escaping]
        present = {p.relative_to(data).as_posix(): p for p in list_files(data)} if data.is_dir() else {}
        for rel, e in listed.items():
            p = present.get(rel)
            if p is None:
                problems.append(f"{rel}: missing")
                continue
            if p.is_symlink():
                problems.append(f"{rel}: is a symlink")
                continue
            size = p.stat().st_size
            if size != e["size"]:
                problems.append(f"{rel}: size {size} != {e['size']}")
            elif digest_file(p) != e["xxh3"]:
                problems.append(f"{rel}: content digest mismatch")
        for rel in present.keys() - listed.keys():
            problems.append(f"{rel}: not in manifest")
        if not problems and digest_listing(m.get("outputs", [])) != m.get("output_digest"):
            problems.append("output digest does not match the file list")
        return problems

    def quarantine(self, key: str) -> Path:
        """Move an object out of ``objects/`` so it is never used again; returns where it went."""
        dest = self.root / "quarantine" / f"{key}.{int(time.time())}.{os.getpid()}"
        obj = self.object_dir(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(obj, dest)
        except OSError as e:
            # e.g. `chattr +i` or a read-only mount: say what to do instead of a traceback
            raise ImmovableObject(f"the object cannot be moved aside to quarantine/ ({e.strerror}): remove {obj} by hand "
                                  "(if `lsattr -d` shows it immutable, `chattr -i` it first) and rerun") from None
        return dest

    # ---- writing
    def new_tmp(self, key: str) -> Path:
        """A fresh build directory for ``key`` (with an empty ``data/``)."""
        self.ensure()
        d = self.root / "tmp" / f"{key}.{socket.gethostname()}.{os.getpid()}.{time.monotonic_ns()}"
        (d / DATA).mkdir(parents=True)
        return d

    def publish(self, tmp: Path, key: str, manifest: dict[str, Any], on_file: Callable[[], None] | None = None) -> dict[str, Any]:
        """Hash and fsync ``tmp/data``, write the manifest last, rename into place.

        Returns the final manifest (with ``outputs`` and ``output_digest`` filled in).
        """
        outputs = self._hash_outputs(tmp / DATA, on_file)
        manifest = {**manifest, "outputs": outputs, "output_digest": digest_listing(outputs)}
        self._commit(tmp, key, manifest)
        return manifest

    def publish_verified(self, tmp: Path, key: str, manifest: dict[str, Any]) -> None:
        """Publish files fetched from elsewhere only if they match ``manifest`` exactly."""
        outputs = self._hash_outputs(tmp / DATA)
        if manifest.get("key") != key:
            raise CorruptObject(f"object {key}: manifest names key {manifest.get('key')}")
        expected = [{k: e[k] for k in ("path", "size", "xxh3")} for e in manifest.get("outputs", [])]
        if sorted(expected, key=lambda e: e["path"]) != outputs or digest_listing(outputs) != manifest.get("output_digest"):
            raise CorruptObject(f"object {key}: fetched files do not match its manifest")
        self._commit(tmp, key, manifest)

    def _hash_outputs(self, data: Path, on_file: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        for p in list_files(data):
            rel = p.relative_to(data).as_posix()
            if p.is_symlink():
                raise GenesisError(f"stage output {rel} is a symlink; outputs must be regular files")
            outputs.append({"path": rel, "size": p.stat().st_size, "xxh3": digest_file(p)})
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(p, 0o444)
            faults.point("publish.file")
            if on_file:
                on_file()
        for dirpath, _, _ in os.walk(data):
            fsync_dir(Path(dirpath))
        return outputs

    def _commit(self, tmp: Path, key: str, manifest: dict[str, Any]) -> None:
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True), mode=0o444)
        fsync_dir(tmp)
        faults.point("publish.before_rename")
        final = self.object_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # --force rebuild, or a stale incomplete dir: move it aside first
            trash = self.root / "tmp" / f"{key}.replaced.{os.getpid()}.{time.monotonic_ns()}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
        fsync_dir(final.parent)

    def discard(self, tmp: Path) -> None:
        """Remove a build directory after a failure."""
        shutil.rmtree(tmp, ignore_errors=True)

    def clean_tmp(self) -> int:
        """Remove build dirs left by dead processes of this host; returns how many."""
        n = 0
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return 0
        host = socket.gethostname()
        for d in tmp.iterdir():
            parts = d.name.split(".")
            if len(parts) >= 4 and parts[-3] == host and parts[-2].isdigit() and not pid_alive(int(parts[-2])):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
            elif ".replaced." in d.name:
                shutil.rmtree(d, ignore_errors=True)
        return n

    # ---- locks
    @contextlib.contextmanager
    def lock(self, name: str, node: str = "", on_wait: Callable[[dict[str, Any]], None] | None = None,
             poll: float = 0.2) -> Iterator[None]:
        """Exclusive per-key lock across processes (and hosts, where the filesystem supports flock).

        The kernel drops the lock when its holder dies, so a killed builder never leaves a stale
        lock. ``on_wait`` is called once with the holder's ``{host, pid, node, since}``.
        """
        self.ensure()
        path = self.root / "locks" / f"{name}.lock"
        owner = path.with_suffix(".owner")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited and on_wait:
                        try:
                            info = json.loads(owner.read_text())
                        except (OSError, ValueError):
                            info = {}
                        on_wait(info)
                    waited = True
                    time.sleep(poll)
            info = {"host": socket.gethostname(), "pid": os.getpid(), "node": node, "since": time.time()}
            atomic_write(owner, json.dumps(info), mode=0o664, durable=False)  # dies with the lock: no fsync
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    owner.unlink()
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ---- refs, listing, gc
    def write_refs(self, workspace_id: str, workspace_path: str, nodes: dict[str, str]) -> None:
        """Record which objects a workspace's nodes point at (gc roots), merging with earlier refs."""
        path = self.root / "refs" / f"{workspace_id}.json"
        with self.lock(f"refs-{workspace_id}"):
            try:
                cur = json.loads(path.read_text())
            except (OSError, ValueError):
                cur = {"workspace": workspace_path, "nodes": {}}
            cur["workspace"] = workspace_path
            cur["nodes"].update(nodes)
            cur["updated"] = time.time()
            atomic_write(path, json.dumps(cur, indent=1, sort_keys=True), mode=0o664)

    def all_refs(self) -> dict[str, dict[str, Any]]:
        """Every workspace's refs file."""
        out = {}
        for p in sorted((self.root / "refs").glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
        return out

    def size_of(self, key: str) -> int:
        """Bytes used by an object's data files."""
        m = self.manifest(key) or {}
        return sum(e["size"] for e in m.get("outputs", []))

    def _try_lock(self, name: str) -> int | None:
        """A non-blocking hold of lock ``name`` (None when someone holds it); release with os.close."""
        self.ensure()
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def gc_scratch(self, keep_trajectories: set[str], keep_days: float = 0.0,
                   dry_run: bool = False) -> list[tuple[str, int, str]]:
        """Delete resumable run dirs no kept object came from and per-item samples, older than
        ``keep_days`` (by modification time); returns (path, bytes, what).

        A run dir whose lock is held (a training run in progress) is never touched. Samples are a
        cache of a cache: deleting one only means it is generated again if a changed spec needs it
        (stages set the atime of every sample they reuse).
        """
        cutoff = time.time() - keep_days * 86400
        removed: list[tuple[str, int, str]] = []
        runs = self.root / "runs"
        for d in sorted(runs.iterdir()) if runs.is_dir() else []:
            if d.name in keep_trajectories or _newest_mtime(d) > cutoff:
                continue
            fd = self._try_lock(f"run-{d.name}")
            if fd is None:
                continue
            try:
                removed.append((str(d.relative_to(self.root)), tree_size(d), "run dir"))
                if not dry_run:
                    trash = self.root / "tmp" / f"run-{d.name}.deleted.{os.getpid()}.{time.monotonic_ns()}"
                    os.rename(d, trash)
                    shutil.rmtree(trash, ignore_errors=True)
            finally:
                os.close(fd)
        samples = self.root / "samples"
        for f in sorted(samples.rglob("*")) if samples.is_dir() else []:
            try:
                st = f.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_atime) > cutoff:
                continue  # atime: stages record each reuse there
            removed.append((str(f.relative_to(self.root)), st.st_size, "sample"))
            if not dry_run:
                with contextlib.suppress(OSError):
                    f.unlink()
        return removed

    def gc(self, keep: set[str], keep_days: float = 0.0, dry_run: bool = False) -> list[tuple[str, int, str]]:
        """Delete objects not in ``keep`` and older than ``keep_days``; returns (key, bytes, stage)."""
        cutoff = time.time() - keep_days * 86400
        removed = []
        for key in list(self.keys()):
            if key in keep:
                continue
            m = self.manifest(key) or {}
            if m.get("created", 0) > cutoff:
                continue
            removed.append((key, self.size_of(key), m.get("node", "?")))
            if not dry_run:
                with self.lock(key):
                    trash = self.root / "tmp" / f"{key}.replaced.{os.getpid()}.{time.monotonic_ns()}"
                    os.rename(self.object_dir(key), trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        self.log_path(key).unlink()
        return removed


@dataclass
class GcReport:
    """What :func:`collect_garbage` deleted (or, dry run, would delete)."""

    removed: list[tuple[str, int, str]]  # (key, bytes, node) of each object
    kept: int  # referenced objects kept
    scratch: list[tuple[str, int, str]]  # (path, bytes, "run dir" | "sample")


def collect_garbage(cache: Cache, everything: bool = False, keep_days: float = 0.0, dry_run: bool = False) -> GcReport:
    """``cache gc``: delete objects no workspace's refs point at (``everything``: regardless of refs),
    then the run dirs of trajectories no remaining object continues and stale samples."""
    keep: set[str] = set()
    if not everything:
        for refs in cache.all_refs().values():
            keep.update(refs.get("nodes", {}).values())
    removed = cache.gc(keep, keep_days=keep_days, dry_run=dry_run)
    gone = {k for k, _, _ in removed}
    trajectories = {(cache.manifest(k) or {}).get("trajectory") for k in cache.keys() if k not in gone}
    scratch = cache.gc_scratch({t for t in trajectories if t}, keep_days=keep_days, dry_run=dry_run)
    return GcReport(removed, len(keep), scratch)


def _newest_mtime(root: Path) -> float:
    newest = root.stat().st_mtime
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def tree_size(root: Path) -> int:
    """Bytes of the files below ``root`` (symlinks not followed; vanished files skipped)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
