"""Command lines of the real defacers (no container runtime needed: stubs stand in for tools)."""

import gzip
import os
import stat
import subprocess

import pytest

from defaceaudit.deface.containers import (
    afni_refacer2_command,
    check_image_reference,
    fsl_deface_command,
    mideface_command,
    mri_deface_command,
    mri_reface_command,
    pydeface_command,
    pydeface_mask_path,
    quickshear_command,
)

IN = "data/sub 01/anat/sub-01_T1w.nii.gz"  # a space: must be quoted
OUT = "results/defaced/sub-01_fsl.nii.gz"
MASK = "results/defaced/sub 01_removed.nii.gz"
DIGEST = "a" * 64


def _bash_parses(cmd: str) -> None:
    proc = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_fsl_deface_documented_form():
    cmd = fsl_deface_command(IN, OUT, MASK)
    assert cmd.startswith("set -euo pipefail; ")
    assert 'export PATH="$FSLDIR/bin:$PATH"; export FSLOUTPUTTYPE=NIFTI_GZ' in cmd
    assert "fsl_shim" not in cmd and "command -v fsl" not in cmd  # no launcher needed
    assert cmd.endswith(f"; fsl_deface '{IN}' {OUT} -d '{MASK}'")
    assert fsl_deface_command(IN, OUT, MASK, fraction=0.3, bias_correct=True).endswith(
        f"; fsl_deface '{IN}' {OUT} -d '{MASK}' -f 0.3 -B"
    )
    _bash_parses(cmd)
    with pytest.raises(ValueError):
        fsl_deface_command(IN, OUT, MASK, fraction=1.5)


def test_mri_deface_documented_form():
    cmd = mri_deface_command(IN, OUT)
    assert cmd == (
        f"mri_deface '{IN}' /flywheel/v0/talairach_mixed_with_skull.gca /flywheel/v0/face.gca {OUT}"
    )
    assert mri_deface_command("a.nii.gz", "b.nii.gz", atlas_dir="/opt/atlas dir/") == (
        "mri_deface a.nii.gz '/opt/atlas dir/talairach_mixed_with_skull.gca' "
        "'/opt/atlas dir/face.gca' b.nii.gz"
    )
    _bash_parses(cmd)


def test_quickshear_documented_form():
    cmd = quickshear_command(IN, "masks/brain.nii.gz", OUT)
    assert cmd == f"quickshear '{IN}' masks/brain.nii.gz {OUT} 10"
    assert quickshear_command("a.nii", "m.nii", "o.nii", buffer=2.5).endswith(" 2.5")
    _bash_parses(cmd)
    with pytest.raises(ValueError):
        quickshear_command("a.nii", "m.nii", "o.nii", buffer=-1)


def test_pydeface_mask_path_matches_pydeface_2_1_0():
    # pydeface/__main__.py 2.1.0: infile.replace('.gz', '').replace('.nii', '_pydeface_mask.nii.gz')
    assert pydeface_mask_path("/w/t1w.nii.gz") == "/w/t1w_pydeface_mask.nii.gz"
    assert pydeface_mask_path("/w/t1w.nii") == "/w/t1w_pydeface_mask.nii.gz"


def test_pydeface_command_form():
    cmd = pydeface_command(IN, OUT, MASK, workdir="work/pd sub-01", cost="corratio")
    _bash_parses(cmd)
    assert cmd.startswith("set -euo pipefail; ")
    assert 'export FSLDIR="${FSLDIR:-/usr/share/fsl}"' in cmd
    assert '. "$FSLDIR/etc/fslconf/fsl.sh"' in cmd
    assert 'export PATH="$FSLDIR/bin:$PATH"' in cmd
    assert f"cp -f '{IN}' 'work/pd sub-01/t1w.nii.gz'" in cmd
    assert (
        f"pydeface 'work/pd sub-01/t1w.nii.gz' --outfile {OUT} --cost corratio --nocleanup --force"
        in cmd
    )
    assert cmd.endswith(f"mv -f 'work/pd sub-01/t1w_pydeface_mask.nii.gz' '{MASK}'")


def test_mri_reface_command_form():
    cmd = mri_reface_command(IN, OUT, "work/mr", "work/mcr cache")
    _bash_parses(cmd)
    assert 'wd="$(cd work/mr && pwd -P)"; rm -f "$wd/t1w_deFaced.nii"; gunzip' in cmd
    assert f"gunzip -c '{IN}' > \"$wd/t1w.nii\"" in cmd
    assert "MCR_CACHE_ROOT=\"$(cd 'work/mcr cache' && pwd -P)\"; export MCR_CACHE_ROOT" in cmd
    assert 'run_mri_reface.sh "$wd/t1w.nii" "$wd" -imType T1' in cmd
    assert 'test -s "$wd/t1w_deFaced.nii"' in cmd
    assert cmd.endswith(f'gzip -c "$wd/t1w_deFaced.nii" > {OUT}')


def test_mideface_documented_form():
    cmd = mideface_command(IN, OUT, MASK, "work/md", "/opt/fs licence/license.txt", threads=4)
    _bash_parses(cmd)
    assert cmd.startswith("set -euo pipefail; export FS_LICENSE='/opt/fs licence/license.txt'; ")
    assert (
        f"mideface --i '{IN}' --o {OUT} --facemask work/md/face.mask.mgz --odir work/md/qa "
        "--threads 4; "
    ) in cmd
    assert f"if ! test -s {OUT}; then" in cmd
    assert cmd.endswith(f"mri_convert work/md/face.mask.mgz '{MASK}'")
    options = mideface_command(IN, OUT, MASK, "w", "l.txt", ears=False, samseg=False)
    assert "--odir w/qa --no-ears --no-samseg --threads 1;" in options
    with pytest.raises(ValueError):
        mideface_command(IN, OUT, MASK, "w", "l.txt", threads=0)


def test_afni_refacer2_documented_form_names_its_shell():
    cmd = afni_refacer2_command(IN, OUT, "work/afni")
    _bash_parses(cmd)
    assert (
        f"afni_refacer2 -input '{IN}' -mode_deface -shell afni_refacer_shell_sym_2.1.nii.gz "
        "-prefix work/afni/t1w_deface.nii.gz;"
    ) in cmd
    assert cmd.endswith(f"cp -f work/afni/t1w_deface.nii.gz {OUT}")
    older = afni_refacer2_command(
        IN, OUT, "w", shell="afni_refacer_shell_sym_1.0.nii.gz", mode="reface"
    )
    assert (
        "-mode_reface -shell afni_refacer_shell_sym_1.0.nii.gz -prefix w/t1w_reface.nii.gz" in older
    )
    with pytest.raises(ValueError):
        afni_refacer2_command(IN, OUT, "w", mode="all")  # four outputs: not one defaced image


def _stub(bindir, name, body):
    path = bindir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(cmd, tmp_path, bindir):
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("FSLDIR", None)
    return subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_mri_reface_runs_and_detects_missing_output(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "in dir").mkdir()
    with gzip.open(tmp_path / "in dir" / "t1.nii.gz", "wb") as f:
        f.write(b"NIFTI-BYTES")
    # a wrapper that "succeeds": copies in.nii to <outdir>/<stem>_deFaced.nii
    _stub(
        bindir,
        "run_mri_reface.sh",
        # the real wrapper may change directory: every path it gets must be absolute
        'case "$MCR_CACHE_ROOT" in /*) ;; *) exit 3;; esac; case "$1$2" in /*/*) ;; *) exit 4;; '
        'esac; cd /; s=$(basename "$1" .nii); cp "$1" "$2/${s}_deFaced.nii"\n',
    )
    cmd = mri_reface_command("in dir/t1.nii.gz", "out.nii.gz", "work/mr", "work/mcr")
    proc = _run(cmd, tmp_path, bindir)
    assert proc.returncode == 0, proc.stderr
    assert gzip.decompress((tmp_path / "out.nii.gz").read_bytes()) == b"NIFTI-BYTES"
    # a wrapper that fails but exits 0 (as the real one may): the command must fail
    _stub(bindir, "run_mri_reface.sh", "echo 'MATLAB error' >&2; exit 0\n")
    cmd = mri_reface_command("in dir/t1.nii.gz", "out2.nii.gz", "work/mr2", "work/mcr")
    proc = _run(cmd, tmp_path, bindir)
    assert proc.returncode != 0
    assert "mri_reface wrote no output" in proc.stderr


def test_pydeface_runs_with_stub_and_moves_mask(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # stub mimicking pydeface 2.1.0 --nocleanup: mask and .mat beside the input
    _stub(
        bindir,
        "pydeface",
        'test -n "$FSLDIR"; command -v fsl >/dev/null; in="$1"; out="$3"; '
        'echo defaced > "$out"; m="${in%.nii.gz}"; echo mask > "${m}_pydeface_mask.nii.gz"; '
        'echo mat > "${m}_pydeface.mat"\n',
    )
    (tmp_path / "t1w in.nii.gz").write_text("x")
    cmd = pydeface_command("t1w in.nii.gz", "o.nii.gz", "removed mask.nii.gz", "work/pd")
    proc = _run(cmd, tmp_path, bindir)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.nii.gz").read_text() == "defaced\n"
    assert (tmp_path / "removed mask.nii.gz").read_text() == "mask\n"
    assert not (tmp_path / "t1w in_pydeface_mask.nii.gz").exists()


def test_mideface_runs_with_stubs_and_detects_missing_output(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "license.txt").write_text("licence")
    # mideface stub: needs the licence; writes the output and the face mask it was asked for
    _stub(
        bindir,
        "mideface",
        'test -s "$FS_LICENSE"; while [ $# -gt 0 ]; do case "$1" in --o) o="$2";; '
        '--facemask) m="$2";; esac; shift; done; echo defaced > "$o"; echo mask > "$m"\n',
    )
    _stub(bindir, "mri_convert", 'cp "$1" "$2"\n')
    cmd = mideface_command("t1w.nii.gz", "o.nii.gz", "fm.nii.gz", "work/md", "license.txt")
    proc = _run(cmd, tmp_path, bindir)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.nii.gz").read_text() == "defaced\n"
    assert (tmp_path / "fm.nii.gz").read_text() == "mask\n"
    # a run that writes nothing (e.g. no licence) fails with a message
    _stub(bindir, "mideface", "exit 0\n")
    cmd = mideface_command("t1w.nii.gz", "o2.nii.gz", "fm2.nii.gz", "work/m2", "license.txt")
    proc = _run(cmd, tmp_path, bindir)
    assert proc.returncode != 0 and "mideface wrote no output" in proc.stderr


def test_afni_refacer2_runs_with_a_stub(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # stub: writes the prefix and a QC folder beside it, as afni_refacer2 does
    _stub(
        bindir,
        "afni_refacer2",
        'while [ $# -gt 0 ]; do case "$1" in -prefix) p="$2";; esac; shift; done; '
        'echo refaced > "$p"; mkdir -p "${p%.nii.gz}_QC"\n',
    )
    proc = _run(afni_refacer2_command("t1w.nii.gz", "o.nii.gz", "work/a"), tmp_path, bindir)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.nii.gz").read_text() == "refaced\n"
    assert (tmp_path / "work/a/t1w_deface_QC").is_dir()  # left in the (shadow) work folder


@pytest.mark.parametrize(
    "ref",
    [
        f"docker://poldracklab/pydeface@sha256:{DIGEST}",
        f"docker://poldracklab/pydeface:2.0.0@sha256:{DIGEST}",
        f"docker://ghcr.io/org/fsl-6.0.7:latest@sha256:{DIGEST}",
        f"docker://registry.example.org:5000/a/b@sha256:{DIGEST}",
        "/data/images/mri_reface_0.3.4.sif",
    ],
)
def test_image_reference_accepted(ref):
    check_image_reference(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "docker://poldracklab/pydeface:2.0.0",  # tag only: movable
        "docker://poldracklab/pydeface:latest",
        f"docker://poldracklab/pydeface@sha256:{DIGEST[:63]}",  # short digest
        f"docker://poldracklab/pydeface@sha256:{'A' * 64}",  # upper-case hex
        f"docker://Poldracklab/pydeface@sha256:{DIGEST}",  # repository names are lower case
        f"shub://x/y@sha256:{DIGEST}",
        "https://example.org/mri_reface.tar",
        "images/mri reface docker.tar",  # apptainer exec runs no tarball: build a .sif
        "poldracklab/pydeface",
        "image.img",
        ".sif",
        "",
        f" docker://a/b@sha256:{DIGEST}",
    ],
)
def test_image_reference_rejected(ref):
    with pytest.raises(ValueError):
        check_image_reference(ref)
