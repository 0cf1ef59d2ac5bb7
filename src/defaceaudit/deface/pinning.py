"""``defaceaudit pin-images``: container images pinned by the digests a registry gives.

A tag (``docker://brainlife/fsl:6.0.7``) can be moved to another image; a digest cannot. For each
``deface.containers.<tool>`` of a config file this asks a tool installed here, and writes only
what that tool answered (no digest is ever made up):

* ``skopeo inspect docker://name:tag`` reads the manifest digest from the registry: the entry
  becomes ``docker://name:tag@sha256:<digest>`` (the tag stays, for the reader);
* ``apptainer inspect --json image.sif`` reads a local image's build labels: a ``.sif`` built
  from a digest-pinned reference is reported with that reference, one built from a tag gets a
  warning (rebuild it from a pinned reference). Apptainer cannot read a registry's digest, so
  without skopeo a tag stays as it is, with a message.

The config file is edited in place, line by line (its comments and layout are kept).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from defaceaudit.errors import InputError

__all__ = ["PINNED", "find_inspector", "pin_images", "rewrite_reference", "skopeo_digest"]

#: a digest-pinned reference (the tag before it is optional)
PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FROM_PINNED = re.compile(r"(?:docker://)?\S+@sha256:[0-9a-f]{64}")
Runner = Callable[..., subprocess.CompletedProcess]


def find_inspector(
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[str | None, str | None]:
    """``(registry, local)``: ``"skopeo"`` if installed (reads a tag's digest), and
    ``"apptainer"`` or ``"singularity"`` if installed (reads a local image's labels); InputError
    in one line when none is."""
    registry = "skopeo" if which("skopeo") else None
    local = next((tool for tool in ("apptainer", "singularity") if which(tool)), None)
    if registry is None and local is None:
        raise InputError(
            "pin-images needs skopeo (reads a tag's digest from the registry) or apptainer "
            "(reads a local .sif's source); neither is installed here"
        )
    return registry, local


def skopeo_digest(ref: str, run: Runner = subprocess.run) -> str:
    """The manifest digest (``sha256:<hex>``) of ``docker://name:tag`` from ``skopeo inspect``;
    InputError (one line) when skopeo fails or answers no digest."""
    done = run(["skopeo", "inspect", ref], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise InputError(f"skopeo inspect {ref}: {last[-1] if last else 'failed'}")
    try:
        digest = json.loads(done.stdout).get("Digest", "")
    except json.JSONDecodeError:
        digest = ""
    if not _DIGEST.match(digest or ""):
        raise InputError(f"skopeo inspect {ref}: no sha256 digest in its answer")
    return digest


def sif_source(path: str, tool: str = "apptainer", run: Runner = subprocess.run) -> str | None:
    """The reference a local ``.sif`` was built from, from its labels (``apptainer inspect
    --json``), or None when the image records none."""
    done = run([tool, "inspect", "--json", path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    labels = info.get("data", {}).get("attributes", {}).get("labels", {}) or {}
    for key in ("org.label-schema.usage.singularity.deffile.from", "org.label-schema.usage"):
        value = labels.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def rewrite_reference(text: str, tool: str, old: str, new: str) -> str:
    """``text`` (a YAML config) with ``tool``'s image ``old`` replaced by ``new`` on its own
    ``tool: old`` line (quotes and a trailing comment kept), else where ``old`` occurs once."""
    line = re.compile(
        rf"^(\s*{re.escape(tool)}\s*:\s*[\"']?){re.escape(old)}([\"']?\s*(?:#.*)?)$", re.M
    )
    edited, n = line.subn(lambda m: f"{m[1]}{new}{m[2]}", text)
    if n == 1:
        return edited
    if text.count(old) == 1:
        return text.replace(old, new)
    raise InputError(f"cannot find the one place of {tool}'s image {old} in the config file")


def pin_images(
    config: str | os.PathLike,
    *,
    write: bool = True,
    which: Callable[[str], str | None] = shutil.which,
    run: Runner = subprocess.run,
) -> list[str]:
    """Pin every ``deface.containers`` entry of the YAML file ``config`` that a tool here can
    pin (module docstring); returns one line per entry. With ``write``, the file is rewritten
    when some entry changed. InputError (one line) when neither skopeo nor apptainer is
    installed, or the file has no ``deface.containers``."""
    path = Path(config)
    text = path.read_text()
    images = ((yaml.safe_load(text) or {}).get("deface") or {}).get("containers") or {}
    images = {tool: ref for tool, ref in images.items() if ref}
    if not images:
        raise InputError(f"{path}: no deface.containers images to pin")
    registry, local = find_inspector(which)
    lines, edited = [], text
    for tool, ref in images.items():
        if PINNED.search(ref):
            lines.append(f"{tool}: {ref} (pinned already)")
        elif ref.startswith("docker://"):
            if registry is None:
                lines.append(
                    f"{tool}: {ref} not pinned: {local} cannot read a registry's digest "
                    "(install skopeo, or give the digest `docker pull` printed)"
                )
                continue
            new = f"{ref}@{skopeo_digest(ref, run)}"
            edited = rewrite_reference(edited, tool, ref, new)
            lines.append(f"{tool}: {ref} -> {new}")
        elif local is None:
            lines.append(
                f"{tool}: {ref} left as it is (a local image: install apptainer to read it)"
            )
        else:
            source = sif_source(ref, local, run)
            if source and _FROM_PINNED.search(source):
                lines.append(f"{tool}: {ref} (built from {source})")
            else:
                lines.append(
                    f"{tool}: {ref} records no digest-pinned source ({source or 'no label'}): "
                    "rebuild it from docker://name@sha256:<digest>"
                )
    if write and edited != text:
        path.write_text(edited)
        lines.append(f"wrote {path}")
    return lines
