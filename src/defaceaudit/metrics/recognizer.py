"""The face recognizer of re-identification: detect, align and embed a face in a 2-D image.

Two embedders behind one detector:

* ``dlib`` (the default): dlib's ResNet face embedding (128-D, 99.38 % on LFW), whose files ship
  in the ``face_recognition_models`` package: nothing is downloaded at run time.
* ``onnx``: a user-supplied ONNX face-embedding model (an ArcFace file, say), input
  ``[1, 3, S, S]`` float, output ``[1, D]``; the aligned face chip is normalised per channel as
  ``(pixel - mean) / std`` (pixels 0..255) in the model's channel order, and the embedding is
  L2-normalised (ArcFace compares by cosine: for unit vectors, the Euclidean distance ranks the
  same).

Faces are found by dlib's HOG frontal face detector (upsampled ``detector_upsample`` times: it
finds faces of about 80 px and more, 40 px after one upsampling), the highest-scoring detection
is kept, its five landmarks (``shape_predictor_5_face_landmarks``) align the face, and
``dlib.get_face_chip`` cuts the aligned chip each embedder needs (dlib's own: 150 px with 25 %
padding).

Importing this module is cheap (no dlib, no onnxruntime): :class:`RecognizerSettings` is read and
checked when the workflow's DAG is built; :func:`load_recognizer` imports what the recognizer
needs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defaceaudit.errors import InputError

__all__ = [
    "RECOGNIZERS",
    "Face",
    "FaceRecognizer",
    "RecognizerSettings",
    "dlib_model_file",
    "load_recognizer",
]

RECOGNIZERS = ("dlib", "onnx")
#: the files of ``face_recognition_models`` the recognizer uses
DLIB_MODELS = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}
#: detection score threshold of the HOG detector (dlib's default; > 0: a face)
DETECTION_THRESHOLD = 0.0
#: an ONNX file is a protobuf ModelProto: its first field, ir_version (field 1, varint), is
#: written first, as the tag byte 0x08
ONNX_FIRST_BYTE = 0x08


@dataclass(frozen=True)
class RecognizerSettings:
    """The config's ``metrics.face_recognition`` recognizer keys (schema defaults).

    ``name``: ``dlib`` or ``onnx``; ``detector_upsample``: upsamplings of the image before
    detection; for ``onnx``: ``model`` (path), ``input_size`` (S, px), ``mean`` and ``std`` (per
    channel, on 0..255 pixels), ``channel_order`` (``rgb`` or ``bgr``) and ``padding`` (of the
    aligned chip, a fraction of the face's size, as ``dlib.get_face_chip``'s).
    """

    name: str = "dlib"
    detector_upsample: int = 1
    model: str | None = None
    input_size: int = 112
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    channel_order: str = "rgb"
    padding: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping) -> RecognizerSettings:
        """From the validated ``metrics.face_recognition`` section."""
        onnx = dict(section.get("onnx") or {})
        return cls(
            name=section.get("recognizer", "dlib"),
            detector_upsample=int(section.get("detector_upsample", 1)),
            model=onnx.get("model"),
            input_size=int(onnx.get("input_size", 112)),
            mean=tuple(float(v) for v in onnx.get("mean", cls.mean)),  # type: ignore[arg-type]
            std=tuple(float(v) for v in onnx.get("std", cls.std)),  # type: ignore[arg-type]
            channel_order=onnx.get("channel_order", "rgb"),
            padding=float(onnx.get("padding", 0.0)),
        )

    def check(self) -> None:
        """InputError (one line) when the recognizer cannot run: an unknown name, no ONNX model
        path, a model file that is missing, unreadable or not an ONNX file, or (dlib) the
        ``face_recognition_models`` files missing. Opens at most the model's first byte."""
        where = "config metrics.face_recognition"
        if self.name not in RECOGNIZERS:
            raise InputError(f"{where}.recognizer: {self.name!r} is not one of {RECOGNIZERS}")
        # found, not imported: the DAG never loads dlib or onnxruntime
        needed = {"dlib": "dlib-bin==20.0.1.post1"}
        if self.name == "onnx":
            needed["onnxruntime"] = "onnxruntime==1.31.1"
        for module, package in needed.items():
            if importlib.util.find_spec(module) is None:
                raise InputError(
                    f"face recognition: {module} is not installed (pip install {package})"
                )
        if self.name == "dlib":
            for name in DLIB_MODELS.values():
                dlib_model_file(name)
            return
        if not self.model:
            raise InputError(f"{where}.onnx.model: recognizer is onnx but no model file is given")
        path = Path(self.model)
        try:
            with open(path, "rb") as handle:
                first = handle.read(1)
        except FileNotFoundError:
            raise InputError(f"{where}.onnx.model: {path}: file missing") from None
        except OSError as err:
            raise InputError(
                f"{where}.onnx.model: {path}: cannot read ({err.strerror or type(err).__name__})"
            ) from None
        if not first or first[0] != ONNX_FIRST_BYTE:
            raise InputError(f"{where}.onnx.model: {path}: not an ONNX model file")

    def as_params(self) -> dict:
        """Plain values (the rule's params: a change reruns the embedding)."""
        values = asdict(self)
        if self.name == "dlib":  # the ONNX keys do not change a dlib embedding
            values = {k: values[k] for k in ("name", "detector_upsample")}
        return values

    def label(self) -> str:
        """How tables name the recognizer: ``dlib ResNet`` or the ONNX file's name."""
        if self.name == "dlib":
            return "dlib ResNet (face_recognition_models)"
        return f"ONNX {Path(self.model or '').name}"


def dlib_model_file(name: str) -> str:
    """Path of one model file of ``face_recognition_models``, found without importing the
    package (its ``__init__`` needs ``pkg_resources``, which current setuptools lacks);
    InputError when the package or the file is missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "face recognition: the face_recognition_models package is not installed "
            "(pip install face_recognition_models==0.3.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise InputError(f"face recognition: {path}: file missing")
    return str(path)


@dataclass(frozen=True)
class Face:
    """A face found in an image: ``score`` (the detector's), ``box`` (left, top, right, bottom,
    px) and ``embedding`` ``[D]`` float32."""

    score: float
    box: tuple[int, int, int, int]
    embedding: np.ndarray = field(repr=False)


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` -> C-contiguous uint8 ``[H, W, 3]``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"face images are uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face images are [H, W] or [H, W, 3], got {image.shape}")
    return np.ascontiguousarray(image)


class FaceRecognizer:
    """Detect, align and embed one face per image (:meth:`find`); build with
    :func:`load_recognizer`."""

    def __init__(self, settings: RecognizerSettings) -> None:
        import dlib  # imported here: the workflow's DAG never needs it

        self.settings = settings
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(dlib_model_file(DLIB_MODELS["landmarks"]))
        self._embed = self._onnx_embedder() if settings.name == "onnx" else self._dlib_embedder()

    def _dlib_embedder(self):
        model = self._dlib.face_recognition_model_v1(dlib_model_file(DLIB_MODELS["embedding"]))

        def embed(rgb: np.ndarray, shape) -> np.ndarray:
            return np.asarray(model.compute_face_descriptor(rgb, shape), dtype=np.float32)

        return embed

    def _onnx_embedder(self):
        import onnxruntime  # imported here: only the onnx recognizer needs it

        s = self.settings
        options = onnxruntime.SessionOptions()
        # one thread each: jobs run side by side, each on its own core
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(
                str(s.model), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own, unexported error types
            raise InputError(
                f"face recognition: {s.model}: not a usable ONNX model ({err})"
            ) from err
        entry = session.get_inputs()[0]
        dims = list(entry.shape)
        if len(dims) != 4 or any(
            isinstance(d, int) and d != want
            for d, want in zip(dims[1:], (3, s.input_size, s.input_size), strict=True)
        ):
            raise InputError(
                f"face recognition: {s.model}: input {entry.name} has shape {dims}; expected "
                f"[N, 3, {s.input_size}, {s.input_size}] (onnx.input_size)"
            )
        mean = np.asarray(s.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(s.std, dtype=np.float32).reshape(3, 1, 1)

        def embed(rgb: np.ndarray, shape) -> np.ndarray:
            chip = self._dlib.get_face_chip(rgb, shape, size=s.input_size, padding=s.padding)
            if s.channel_order == "bgr":
                chip = chip[..., ::-1]
            x = (chip.transpose(2, 0, 1).astype(np.float32) - mean) / std
            out = np.asarray(session.run(None, {entry.name: x[None]})[0], dtype=np.float32)
            vector = out.reshape(-1)
            return vector / max(float(np.linalg.norm(vector)), 1e-12)

        return embed

    def find(self, image: np.ndarray) -> Face | None:
        """The highest-scoring face in ``image`` (uint8 ``[H, W]`` grey or ``[H, W, 3]`` RGB)
        with its embedding; None when the detector finds none."""
        rgb = _rgb(image)
        boxes, scores, _ = self._detector.run(
            rgb, self.settings.detector_upsample, DETECTION_THRESHOLD
        )
        if not len(boxes):
            return None
        best = int(np.argmax(scores))
        box = boxes[best]
        shape = self._landmarks(rgb, box)
        return Face(
            float(scores[best]),
            (box.left(), box.top(), box.right(), box.bottom()),
            self._embed(rgb, shape),
        )

    def find_all(self, images: Sequence[np.ndarray]) -> list[Face | None]:
        return [self.find(image) for image in images]


def load_recognizer(settings: RecognizerSettings | Mapping) -> FaceRecognizer:
    """The recognizer of ``settings`` (a :class:`RecognizerSettings` or its
    :meth:`~RecognizerSettings.as_params` dict), checked first (InputError, one line)."""
    if not isinstance(settings, RecognizerSettings):
        settings = RecognizerSettings(**dict(settings))
    settings.check()
    return FaceRecognizer(settings)


def model_path(settings: RecognizerSettings) -> str | None:
    """The model file a recognizer reads besides the installed packages (its rule's input)."""
    return os.fspath(settings.model) if settings.name == "onnx" and settings.model else None
