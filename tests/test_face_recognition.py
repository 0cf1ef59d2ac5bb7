"""Re-identification by face recognition on rendered heads: the renderer's analytic shading,
synthetic faces that dlib finds and identifies, faceless heads that are never identified, the
ONNX path on a tiny model made here, the config checks at DAG time, the tables over files, and
(where a demo run exists in this checkout) the demo's real heads found as faces."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from synthetic_faces import face_head, face_params

from defaceaudit.errors import InputError
from defaceaudit.imaging import face_views as fv
from defaceaudit.metrics import face_recognition as fr
from defaceaudit.metrics.recognizer import RecognizerSettings, load_recognizer
from defaceaudit.metrics.reidentify import reidentify_faces

REPO = Path(__file__).resolve().parents[1]
FRONTAL = (fv.View("frontal"),)
#: the synthetic subjects of the identification tests
N_SUBJECTS = 8


def _views(img, views=FRONTAL, head=None):
    data = np.asarray(img.dataobj, dtype=np.float32)
    return fv.render_views(data, img.affine, views, head=data > 100 if head is None else head)


def test_a_sphere_renders_as_a_disc_shaded_as_lambert_says():
    # a ball of radius 60 mm on a 2 mm grid: seen from the front, a disc of 60 / 0.9 px radius,
    # its centre facing the camera (normal = towards the viewer)
    shape, vox = (80, 80, 80), 2.0
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = -vox * (np.asarray(shape) - 1) / 2
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    ball = (np.linalg.norm(world, axis=1) <= 60).reshape(shape)
    view = fv.View("frontal")
    surface = fv.surface_field(ball.astype(np.float32), affine, ball)
    # aim at the ball's centre (the renderer aims FACE_DROP_MM below the head's centre)
    centre = surface.centre_mm + np.array([0, 0, fv.FACE_DROP_MM])
    surface = dataclasses.replace(surface, centre_mm=centre)
    image = fv.render_view(surface, view, size=161, pixel_mm=1.0)
    lit = image > 0
    radius = np.sqrt(lit.sum() / np.pi)
    assert abs(radius - 60.0) < 1.5  # mm = px here
    light = np.asarray(view.light) / np.linalg.norm(view.light)
    halfway = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])
    expected = fv.AMBIENT + fv.DIFFUSE * light[2] + fv.SPECULAR * halfway[2] ** fv.SHININESS
    assert abs(int(image[80, 80]) - 255 * expected) <= 3
    # the light comes from the viewer's upper left: that quadrant is brighter
    assert image[60, 60] > image[100, 100]
    # deterministic, bit for bit
    again = fv.render_view(surface, view, size=161, pixel_mm=1.0)
    assert np.array_equal(image, again)


def test_yaw_turns_the_camera_towards_the_patients_left():
    camera = fv._camera(fv.View("left", yaw_deg=90.0))
    # the camera stands at the patient's left (-x) and looks at the left ear
    assert np.allclose(camera[:, 2], [-1, 0, 0], atol=1e-9)
    pitched = fv._camera(fv.View("above", pitch_deg=90.0))
    assert np.allclose(pitched[:, 2], [0, 0, 1], atol=1e-9)  # from the top of the head
    for matrix in (camera, pitched):
        assert np.allclose(matrix.T @ matrix, np.eye(3)) and np.linalg.det(matrix) > 0


@pytest.fixture(scope="module")
def recognizer():
    return load_recognizer(RecognizerSettings())


#: the views of the identification tests: an image's embedding is their mean, as in the
#: pipeline (face_recognition.image_embedding)
THREE_VIEWS = (
    fv.View("frontal"),
    fv.View("left10", yaw_deg=10.0),
    fv.View("right10", yaw_deg=-10.0),
)


def _embedding(recognizer, img, views=THREE_VIEWS):
    """The mean embedding over ``views`` with a face (None: no face in any)."""
    faces = [recognizer.find(image) for image in _views(img, views).values()]
    found = [f.embedding for f in faces if f is not None]
    return np.mean(found, axis=0) if found else None


@pytest.fixture(scope="module")
def synthetic_faces(recognizer):
    """Per synthetic subject: the embeddings of its gallery image, of another session turned
    by 8 degrees (a probe) and of its defaced head (None: no face found)."""
    out = {}
    for seed in range(N_SUBJECTS):
        params = face_params(seed)
        out[f"s{seed}"] = (
            _embedding(recognizer, face_head(params)),
            _embedding(recognizer, face_head(params, yaw_deg=8.0, noise_seed=1)),
            _embedding(recognizer, face_head(params, face=False, noise_seed=2)),
        )
    return out


def test_a_synthetic_face_is_found_in_every_default_view(recognizer):
    views = _views(face_head(), fv.DEFAULT_VIEWS)
    faces = {name: recognizer.find(image) for name, image in views.items()}
    assert all(face is not None for face in faces.values()), faces
    frontal = faces["frontal"]
    assert frontal.embedding.shape == (128,) and frontal.score > 0
    left, top, right, bottom = frontal.box
    assert 60 < right - left < 200 and 60 < bottom - top < 200  # a face, not the whole frame


def _probes(embeddings, image_type="original"):
    return [
        {
            "subject": s,
            "test_set": "t",
            "image_type": image_type,
            "image": image_type,
            "embedding": e,
            "n_views": 3,
            "n_views_face": int(e is not None),
        }
        for s, e in embeddings.items()
    ]


def test_identical_renderings_match(recognizer):
    images = {f"s{seed}": _views(face_head(face_params(seed)))["frontal"] for seed in range(3)}
    gallery = {s: recognizer.find(image).embedding for s, image in images.items()}
    again = {s: recognizer.find(image).embedding for s, image in images.items()}
    ranks = fr.rank_face_probes({"t": gallery}, _probes(again))
    assert (ranks["rank"] == 1).all() and (ranks["distance_own"] == 0).all()


@pytest.mark.slow
def test_another_session_of_a_synthetic_face_is_identified(synthetic_faces):
    gallery = {s: faces[0] for s, faces in synthetic_faces.items()}
    probes = _probes({s: faces[1] for s, faces in synthetic_faces.items()})
    ranks = fr.rank_face_probes({"t": gallery}, probes)
    assert (ranks["rank"] == 1).mean() >= 0.75, ranks[["subject", "rank", "nearest"]]


@pytest.mark.slow
def test_a_head_without_its_face_is_never_identified(synthetic_faces):
    # dlib finds no face on a defaced synthetic head: the probe is not identified
    gallery = {s: faces[0] for s, faces in synthetic_faces.items()}
    probes = _probes({s: faces[2] for s, faces in synthetic_faces.items()}, "defaced")
    summary = fr.summarise_ranks(fr.rank_face_probes({"t": gallery}, probes), n_resamples=100)
    row = summary.iloc[0]
    assert row["rank1_rate"] <= row["chance_rank1"]
    assert row["n_no_face"] == N_SUBJECTS and row["median_rank"] == N_SUBJECTS


def test_faces_that_carry_no_identity_match_at_chance_over_many_draws():
    # whatever a recognizer finds on a defaced head that is not the subject's face (here: an
    # embedding drawn at random, the same distribution for everyone) is matched at chance
    rng = np.random.default_rng(0)
    n, draws, hits = 5, 400, 0
    for draw in range(draws):
        gallery = {f"s{i}": rng.normal(size=8) for i in range(n)}
        probes = [
            {
                "subject": s,
                "test_set": "t",
                "image_type": "defaced",
                "image": "d",
                "embedding": rng.normal(size=8),
                "n_views": 1,
                "n_views_face": 1,
            }
            for s in gallery
        ]
        hits += int((fr.rank_face_probes({"t": gallery}, probes, seed=draw)["rank"] == 1).sum())
    rate, chance = hits / (n * draws), 1 / n
    assert abs(rate - chance) < 3 * np.sqrt(chance * (1 - chance) / (n * draws))


def _tiny_onnx(path, size=32, dim=4):
    """An ONNX "embedding": 8x8 average pooling, flatten, a fixed random projection to ``dim``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(3 * (size // 8) ** 2, dim))
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["y"]),
        ],
        "tiny_embedding",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_an_onnx_embedding_model_made_here_embeds_the_faces(tmp_path):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    settings = RecognizerSettings(name="onnx", model=str(model), input_size=32, padding=0.25)
    settings.check()
    recognizer = load_recognizer(settings.as_params())
    image = _views(face_head())["frontal"]
    face = recognizer.find(image)
    assert face is not None and face.embedding.shape == (4,)
    assert np.isclose(np.linalg.norm(face.embedding), 1.0, atol=1e-5)
    assert np.array_equal(recognizer.find(image).embedding, face.embedding)
    # the model's input must be the configured size
    wrong = RecognizerSettings(name="onnx", model=str(model), input_size=64)
    with pytest.raises(InputError, match=r"expected \[N, 3, 64, 64\]"):
        load_recognizer(wrong)


def test_a_missing_or_unreadable_model_is_one_line_at_dag_time(tmp_path):
    from defaceaudit.config import validate_config
    from defaceaudit.workflow.plan import plan_run

    missing = tmp_path / "arcface.onnx"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    for path, message in (
        (missing, "file missing"),
        (tmp_path, "cannot read"),
        (garbage, "not an ONNX model file"),
    ):
        with pytest.raises(InputError, match=message) as err:
            RecognizerSettings(name="onnx", model=str(path)).check()
        message = str(err.value)
        assert "\n" not in message and "metrics.face_recognition.onnx.model" in message
    with pytest.raises(InputError, match="no model file"):
        RecognizerSettings(name="onnx").check()
    small = {
        "demo": {"n_train": 2, "n_internal_test": 3, "n_external_test": 1},
        "radiodensity": {"enabled": False},
    }
    onnx = {"face_recognition": {"recognizer": "onnx", "onnx": {"model": str(missing)}}}
    with pytest.raises(InputError, match="file missing"):
        plan_run(validate_config({**small, "metrics": onnx}))
    # switched off, nothing is checked
    off = {"face_recognition": {**onnx["face_recognition"], "enabled": False}}
    assert not plan_run(validate_config({**small, "metrics": off})).metrics.face_recognition


def _write_subject(folder, seed):
    """NIfTI files of one synthetic subject: original, gallery (another session), defaced."""
    params = face_params(seed)
    files = {
        "original": face_head(params, noise_seed=1),
        "gallery": face_head(params, yaw_deg=-6.0, noise_seed=2),
        "defaced__cut": face_head(params, face=False, noise_seed=1),
    }
    paths = {}
    for label, img in files.items():
        paths[label] = folder / f"s{seed}_{label}.nii.gz"
        nib.save(img, paths[label])
    return paths


@pytest.mark.slow
def test_render_embed_match_over_files_and_merge_into_reidentification(tmp_path):
    from defaceaudit.report.face_views import plot_face_views

    embeddings = {}
    for seed in range(4):
        images = _write_subject(tmp_path, seed)
        renderings = tmp_path / f"s{seed}_faces.npz"
        views = (fv.View("frontal"), fv.View("left10", yaw_deg=10.0))
        fr.render_face_views(images, renderings, views)
        names, stacks = fr.load_renderings(renderings)
        assert names == ["frontal", "left10"] and stacks["original"].shape == (2, 224, 224)
        embeddings[f"s{seed}"] = tmp_path / f"s{seed}_embeddings.npz"
        found = fr.embed_face_views(renderings, embeddings[f"s{seed}"], {"name": "dlib"})
        assert found["original"] >= 1 and found["defaced__cut"] == 0
    sheet = tmp_path / "sheet.png"
    plot_face_views(renderings, embeddings["s3"], sheet, "s3")
    assert sheet.stat().st_size > 10_000
    out = {k: tmp_path / f"fr_{k}" for k in ("ranks", "summary", "markdown")}
    summary = fr.match_face_embeddings(
        {"internal_test": embeddings}, out, recognizer="dlib", n_resamples=100
    )
    by_image = summary.set_index("image")
    assert (summary["matcher"] == "face_recognition").all()
    assert by_image.loc["original", "rank1_rate"] >= 0.75
    assert by_image.loc["cut", "n_no_face"] == 4 and by_image.loc["cut", "rank1_rate"] == 0
    assert by_image.loc["cut", "chance_rank1"] == 0.25
    ranks = pd.read_csv(out["ranks"], sep="\t")
    assert len(ranks) == 8 and ranks.loc[ranks["no_face"], "rank"].isna().all()
    # the surface matcher's table gains these rows and this table (here: surface off)
    merged = {k: tmp_path / f"reid_{k}" for k in ("ranks", "summary", "markdown")}
    table = reidentify_faces(
        {},
        [],
        merged,
        face_recognition_summary=out["summary"],
        face_recognition_markdown=out["markdown"],
    )
    assert table.columns[0] == "matcher" and set(table["matcher"]) == {"face_recognition"}
    written = pd.read_csv(merged["summary"], sep="\t")
    assert len(written) == 2 and "rank1_ci_low" in written.columns
    text = merged["markdown"].read_text()
    assert "by face recognition" in text and "Views with a face found" in text


def test_the_face_recognition_plan_renders_each_reidentified_subject(tmp_path):
    from defaceaudit import paths
    from defaceaudit.config import validate_config
    from defaceaudit.workflow import face_recognition_jobs as jobs
    from defaceaudit.workflow.jobs import RunJobs
    from defaceaudit.workflow.plan import plan_run

    config = validate_config(
        {
            "demo": {"n_train": 2, "n_internal_test": 3, "n_external_test": 1},
            "radiodensity": {"enabled": False},
        }
    )
    run = RunJobs(plan_run(config), config)
    assert jobs.face_recognition_subjects(run.metrics, run.reid) == ["in01", "in02", "in03"]
    images = jobs.face_view_images(run.cohort, run.metrics, "in01")
    assert images["original"] == paths.prepared_files("in01")["t1w"]
    assert images["gallery"] == paths.demo_gallery_t1w("in01")
    assert images["defaced__quickshear"] == paths.defaced_files("quickshear", "in01")["t1w"]
    assert images["population_average__avgface"] == paths.defaced_files("avgface", "in01")["t1w"]
    assert images["dpm_refaced__dpm_facemask"] == paths.refaced_files("facemask", "in01")["t1w"]
    targets = run.run.targets()
    assert paths.face_view_files("in03")["embeddings"] in targets
    assert paths.face_view_sheet("in01") in targets  # the report's example (panel subject)
    assert paths.FACE_RECOGNITION["summary"] in targets
    assert "face_recognition_summary" in run.reidentification_files(None)
    assert run.face_embedding_inputs(type("W", (), {"subject": "in01"})) == {
        "renderings": paths.face_view_files("in01")["renderings"]
    }
    # planning imports neither dlib nor onnxruntime (snakemake -n stays fast)
    probe = (
        "import sys; from defaceaudit.workflow import jobs, face_recognition_jobs; "
        "print(sorted({'dlib', 'onnxruntime', 'torch'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    # off: no rendering, no merged rows
    config["metrics"]["face_recognition"]["enabled"] = False
    off = RunJobs(plan_run(config), config)
    assert not any("face_recognition" in t for t in off.run.targets())
    assert "face_recognition_summary" not in off.reidentification_files(None)


def _demo_heads():
    table = REPO / "results" / "cohort" / "subjects.tsv"
    if not table.exists():
        return None
    cohort = pd.read_csv(table, sep="\t", keep_default_na=False)
    tests = cohort[cohort["split"].str.endswith("_test")]
    heads = []
    for row in tests.itertuples():
        name = f"sub-{row.subject}_desc-prepared_T1w.nii.gz"
        original = REPO / "results" / "prepare" / f"sub-{row.subject}" / "anat" / name
        gallery = getattr(row, "gallery_t1w", "")  # runs before the gallery had none
        for path in (original, REPO / gallery if gallery else None):
            if path is not None and path.exists():
                heads.append(path)
    return heads or None


@pytest.mark.slow
def test_the_demo_heads_render_as_faces_that_dlib_finds(recognizer):
    heads = _demo_heads()
    if heads is None:
        pytest.skip("no demo run in this checkout (results/cohort/, results/prepare/)")
    from defaceaudit.imaging.nifti import load_t1w, to_ras

    found = []
    for path in heads:
        img = to_ras(load_t1w(path))
        frontal = fv.render_views(np.asarray(img.dataobj, np.float32), img.affine, FRONTAL)
        found.append(recognizer.find(frontal["frontal"]) is not None)
    rate = float(np.mean(found))
    print(f"demo: a face found in {sum(found)} of {len(found)} frontal renderings ({rate:.0%})")
    assert rate >= 0.75, json.dumps(dict(zip(map(str, heads), found, strict=True)), indent=1)


def test_the_figure_has_a_row_of_panels_per_matcher(tmp_path):
    from PIL import Image

    from defaceaudit.report.figures import plot_reidentification

    rows = [
        {
            "matcher": matcher,
            "test_set": test_set,
            "image_type": image_type,
            "image": image,
            "n_probes": 4,
            "n_gallery": 4,
            "rank1_rate": rate,
            "rank1_ci_low": rate / 2,
            "rank1_ci_high": 1.0,
            "chance_rank1": 0.25,
        }
        for matcher in ("surface", "face_recognition")
        for test_set in ("internal_test", "external_test")
        for image_type, image, rate in (("original", "original", 1.0), ("defaced", "q", 0.0))
    ]
    both = pd.DataFrame(rows)
    plot_reidentification(both, tmp_path / "both.png")
    plot_reidentification(both[both["matcher"] == "surface"], tmp_path / "one.png")
    tall, short = (Image.open(tmp_path / f"{n}.png").size[1] for n in ("both", "one"))
    assert tall > 1.5 * short
