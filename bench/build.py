"""Compile the benchmark's C programs on first use, into a cache folder outside the checkout.

Like wrk, the load generator is C: a Python client cannot drive a fast server on
two cores.  It is built with the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) the first time it is needed, and kept in
``$SELECTLAB_CACHE`` (default ``$XDG_CACHE_HOME/selectlab``, else
``~/.cache/selectlab``) under a name that includes a hash of the source, the
compiler and the flags, so an edit or another compiler builds a new binary and
nothing compiled ever lands in git.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CFLAGS = ["-O2", "-Wall", "-Wextra"]

#: name -> source file, relative to this package
SOURCES = {
    "loadgen": HERE / "loadgen.c",
    "c_echo": HERE / "peers" / "c_echo.c",
}


class BuildUnavailable(Exception):
    """There is no C compiler, or the build failed; the message says which."""


def cache_dir():
    """The folder compiled programs are kept in (not created here)."""
    if os.environ.get("SELECTLAB_CACHE"):
        return Path(os.environ["SELECTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selectlab"


def compiler():
    """The C compiler's path, or None."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(name):
    """Return the path of program ``name``, compiling it if the cache lacks it.

    Raises
    ------
    BuildUnavailable
        no compiler was found, or it failed (its first lines are in the message).
    """
    source = SOURCES[name]
    cc = compiler()
    if cc is None:
        raise BuildUnavailable("no C compiler found (set CC, or install gcc)")
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    digest.update(" ".join([cc, *CFLAGS]).encode())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:16]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the target and rename, so two runs at once never see half a binary.
    fd, partial = tempfile.mkstemp(prefix=f".{name}-", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", partial, str(source)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            first = "; ".join(done.stderr.strip().splitlines()[:3])
            raise BuildUnavailable(f"{cc} could not compile {source.name}: {first}")
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    except OSError as exc:
        raise BuildUnavailable(f"could not build {source.name}: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
