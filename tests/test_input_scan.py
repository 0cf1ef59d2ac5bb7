"""check-inputs' image scan: heads that already look defaced, images with no brain."""

import nibabel as nib
import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.cli import main
from defaceaudit.prepare.scan import scan_cohort, scan_t1w


def world(img):
    ijk = np.indices(img.shape).reshape(3, -1)
    return (img.affine[:3, :3] @ ijk + img.affine[:3, 3:]).reshape((3, *img.shape))


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """A synthetic head with a face (a jaw and nose block in front of and below the brain), a
    sheared copy (quickshear-like), a copy with its front half gone, and the brain mask."""
    folder = tmp_path_factory.mktemp("scan")
    img, brain = synthetic_head()
    data = img.get_fdata(dtype=np.float32)
    x, y, z = world(img)
    face = (x / 45) ** 2 + ((y - 75) / 30) ** 2 + ((z + 45) / 35) ** 2 <= 1
    data = np.where(face & (data < 100), 800.0, data).astype(np.float32)
    files = {"brain": folder / "brain.nii.gz", "empty": folder / "empty.nii.gz"}
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), files["brain"])
    nib.save(nib.Nifti1Image(np.zeros(brain.shape, np.uint8), img.affine), files["empty"])
    versions = {
        "original": data,
        "sheared": np.where((y > 50) & (z < 0), 0.0, data),
        "brainless": np.where(y > -30, 0.0, data),
    }
    for name, volume in versions.items():
        files[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(volume.astype(np.float32), img.affine), files[name])
    return files


def test_an_original_head_gives_no_warning(heads):
    assert scan_t1w(heads["original"], heads["brain"]) == []


def test_a_defaced_head_is_named(heads):
    (warning,) = scan_t1w(heads["sheared"], heads["brain"])
    assert warning.startswith(f"{heads['sheared']}: looks defaced already")


def test_an_image_without_its_brain_is_named(heads):
    (warning,) = scan_t1w(heads["brainless"], heads["brain"])
    assert warning.startswith(f"{heads['brainless']}: no brain where one is expected")
    (empty,) = scan_t1w(heads["original"], heads["empty"])
    assert "no brain where one is expected" in empty and "is empty" in empty


def test_the_cohort_scan_skips_subjects_without_image_or_mask(heads, tmp_path):
    class Subject:
        def __init__(self, subject, t1w, brain_mask=None):
            self.subject, self.t1w, self.brain_mask = subject, t1w, brain_mask

    prepared = {"c": heads["brain"]}
    report = scan_cohort(
        [
            Subject("a", heads["sheared"], heads["brain"]),
            Subject("b", tmp_path / "missing.nii.gz", heads["brain"]),
            Subject("c", heads["original"]),  # its prepared brain mask exists
            Subject("d", heads["original"]),  # no mask at all
        ],
        lambda s: prepared.get(s, tmp_path / "none.nii.gz"),
    )
    assert report.scanned == 2 and report.not_scanned == ["b", "d"]
    assert len(report.warnings) == 1 and "looks defaced" in report.warnings[0]


def test_check_inputs_prints_the_warnings_naming_the_files(heads, tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "subjects.tsv"
    rows = ["subject\tt1w\tsplit\tage\tsex\tbrain_mask"]
    for n, name in enumerate(["original", "sheared", "brainless", "original"]):
        split = "train" if n < 2 else "internal_test"
        rows.append(f"s{n}\t{heads[name]}\t{split}\t40\tF\t{heads['brain']}")
    manifest.write_text("\n".join(rows) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"input: {{source: manifest, manifest: {manifest}}}\n"
        "deface: {defacers: [quickshear]}\nreface: {enabled: false}\n"
        "radiodensity: {enabled: false}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["check-inputs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert f"{heads['sheared']}: looks defaced already" in warnings[0]
    assert f"{heads['brainless']}: no brain where one is expected" in warnings[1]
    assert "4 of 4 scanned" in out
    assert main(["check-inputs", "--config", str(config), "--no-scan"]) == 0
    assert "warning: " not in capsys.readouterr().out
