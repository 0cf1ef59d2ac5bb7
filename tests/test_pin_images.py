"""defaceaudit pin-images: digests from skopeo or apptainer stand-ins, never made up."""

import json
import subprocess

import pytest

from defaceaudit.cli import main
from defaceaudit.deface.pinning import pin_images, rewrite_reference, skopeo_digest
from defaceaudit.errors import InputError

DIGEST = "sha256:" + "5e" * 32
CONFIG = """\
deface:
  defacers: [mideface, afni_refacer2, mri_reface]
  containers:
    mideface: "docker://freesurfer/freesurfer:7.4.1"  # FreeSurfer with mideface
    afni_refacer2: docker://afni/afni_make_build:AFNI_25.1.00
    mri_reface: /opt/images/mri_reface_0.3.4.sif
"""


def which_only(*tools):
    return lambda name: f"/usr/bin/{name}" if name in tools else None


def fake_run(answers):
    """A subprocess.run stand-in answering each command (matched on its first two words)."""

    def run(args, **kwargs):
        stdout, code = answers[" ".join(args[:2])]
        return subprocess.CompletedProcess(args, code, stdout=stdout, stderr="error: denied\n")

    return run


def test_skopeo_pins_tags_in_place_keeping_quotes_and_comments(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    answer = (json.dumps({"Name": "docker.io/x", "Digest": DIGEST}), 0)
    lines = pin_images(config, which=which_only("skopeo"), run=fake_run({"skopeo inspect": answer}))
    text = config.read_text()
    assert f'mideface: "docker://freesurfer/freesurfer:7.4.1@{DIGEST}"  # FreeSurfer' in text
    assert f"afni_refacer2: docker://afni/afni_make_build:AFNI_25.1.00@{DIGEST}\n" in text
    assert "mri_reface: /opt/images/mri_reface_0.3.4.sif\n" in text  # a local image stays
    assert lines[-1] == f"wrote {config}"
    # a second run finds them pinned and writes nothing
    again = pin_images(config, which=which_only("skopeo"), run=fake_run({}))
    assert (
        "mideface: docker://freesurfer/freesurfer:7.4.1@" in again[0]
        and "pinned already" in again[0]
    )
    assert not again[-1].startswith("wrote")


def test_apptainer_reads_a_sif_source_and_leaves_tags_alone(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    labels = {"org.label-schema.usage.singularity.deffile.from": f"mri_reface@{DIGEST}"}
    inspect = (json.dumps({"data": {"attributes": {"labels": labels}}}), 0)
    lines = pin_images(
        config, which=which_only("apptainer"), run=fake_run({"apptainer inspect": inspect})
    )
    assert config.read_text() == CONFIG  # apptainer cannot read a registry's digest
    assert any("mideface" in line and "not pinned" in line for line in lines)
    assert any(f"built from mri_reface@{DIGEST}" in line for line in lines)


def test_without_skopeo_or_apptainer_it_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    assert main(["pin-images", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither is installed" in err[0]
    assert config.read_text() == CONFIG


def test_a_failing_or_digestless_skopeo_answer_is_an_error():
    with pytest.raises(InputError, match="skopeo inspect docker://a/b:1: error: denied"):
        skopeo_digest("docker://a/b:1", fake_run({"skopeo inspect": ("", 1)}))
    with pytest.raises(InputError, match="no sha256 digest"):
        skopeo_digest("docker://a/b:1", fake_run({"skopeo inspect": ('{"Digest": ""}', 0)}))


def test_rewrite_touches_only_the_tools_line():
    text = "a: docker://x:1\nb: docker://x:1\n"
    assert rewrite_reference(text, "b", "docker://x:1", "docker://x:1@d") == (
        "a: docker://x:1\nb: docker://x:1@d\n"
    )
    flow = "containers: {a: 'docker://y:2'}\n"
    assert rewrite_reference(flow, "a", "docker://y:2", "N") == "containers: {a: 'N'}\n"
