"""Load an attribute classifier for the fairness callback: ours or an external one.

Both kinds expose ``attributes`` (name -> label list, in the dataset's order) and
``predict(images) -> dict[name, LongTensor]`` for RGB images in [0, 1].

- Our checkpoints: ``checkpoints/last.ckpt`` of ``python train.py task=classifier ...``.
- External classifiers with a label map, for example the FairFace authors' ResNet-34
  (Karkkainen and Joo, WACV 2021): torchvision ``resnet34`` with an 18-way ``fc``,
  outputs 0-6 race, 7-8 gender and 9-17 age in their order. Its weight files are not
  redistributable here, and :data:`EXTERNAL_CLASSIFIERS` names where to get them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.classifier import IMAGENET_MEAN, IMAGENET_STD, AttributeClassifier

log = logging.getLogger(__name__)

__all__ = ["ExternalClassifierSpec", "ExternalClassifier", "EXTERNAL_CLASSIFIERS", "load_classifier"]

FAIRFACE_RACE7 = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
FAIRFACE_GENDER = ("Male", "Female")
FAIRFACE_AGE = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")

# Label spellings that differ between a model's outputs and a dataset's label files,
# after the normalisation of _label_key.
_LABEL_ALIASES = {"70": "morethan70"}


@dataclass(frozen=True)
class ExternalClassifierSpec:
    """A torchvision classifier whose output vector is split into attribute heads.

    Attributes
    ----------
    name : str
        Registry key (``classifier_ckpt`` may also name the weight file itself).
    arch : str
        torchvision model builder, for example ``resnet34``.
    outputs : tuple of (attribute, labels)
        Consecutive output slices in order, each with its labels in the model's order.
    input_size : int
        Square side the model expects; images are resized to it.
    filename : str
        The weight file's usual name.
    source : str
        Where to get the weight file.
    """

    name: str
    arch: str
    outputs: tuple[tuple[str, tuple[str, ...]], ...]
    input_size: int
    filename: str
    source: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def n_outputs(self) -> int:
        return sum(len(labels) for _, labels in self.outputs)


EXTERNAL_CLASSIFIERS: dict[str, ExternalClassifierSpec] = {
    "fairface_res34_7": ExternalClassifierSpec(
        name="fairface_res34_7",
        arch="resnet34",
        outputs=(("race", FAIRFACE_RACE7), ("gender", FAIRFACE_GENDER), ("age", FAIRFACE_AGE)),
        input_size=224,
        filename="res34_fair_align_multi_7_20190809.pt",
        source="the FairFace repository, https://github.com/joojs/fairface (model link in its README)",
    ),
}


def _label_key(label: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(label).lower())
    return _LABEL_ALIASES.get(key, key)


class ExternalClassifier(nn.Module):
    """An external multi-head classifier mapped onto a dataset's attributes and labels.

    Each model class is mapped to the dataset label of the same name (case, spaces and
    punctuation ignored, so ``East Asian`` matches ``East_Asian``, and ``70+`` matches
    ``more than 70``). Predictions are the argmax over the model classes that map to a
    dataset label, returned as the dataset's class index.
    """

    def __init__(self, network: nn.Module, spec: ExternalClassifierSpec,
                 attributes: Mapping[str, Sequence[str]], weights_path: Path) -> None:
        super().__init__()
        self.network = network.eval()
        self.spec = spec
        self.weights_path = Path(weights_path)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

        self.attributes: dict[str, list[str]] = {}
        self._slices: dict[str, tuple[int, list[int], list[int]]] = {}
        start = 0
        for name, model_labels in spec.outputs:
            if name in attributes:
                dataset_index = {_label_key(label): k for k, label in enumerate(attributes[name])}
                model_columns, dataset_classes = [], []
                for column, label in enumerate(model_labels):
                    if _label_key(label) in dataset_index:
                        model_columns.append(column)
                        dataset_classes.append(dataset_index[_label_key(label)])
                if not model_columns:
                    raise ValueError(
                        f"{spec.name}: none of its {name} labels {list(model_labels)} match the dataset's "
                        f"{list(attributes[name])}"
                    )
                unmatched = sorted(set(range(len(attributes[name]))) - set(dataset_classes))
                if unmatched:
                    log.warning("%s never predicts %s labels %s", spec.name, name,
                                [attributes[name][k] for k in unmatched])
                self.attributes[name] = list(attributes[name])
                self._slices[name] = (start, model_columns, dataset_classes)
            start += len(model_labels)
        if not self.attributes:
            raise ValueError(
                f"{spec.name} predicts {[n for n, _ in spec.outputs]}, none of which is a dataset attribute "
                f"({sorted(attributes)})"
            )

    def train(self, mode: bool = True) -> "ExternalClassifier":
        # A fixed, pretrained measuring instrument: batch-norm statistics never update.
        return super().train(False)

    def predict(self, images: Tensor) -> dict[str, Tensor]:
        """Return the dataset class index per attribute (int64 ``[B]``)."""
        with torch.no_grad():
            images = images.to(device=self.mean.device, dtype=torch.float32)
            size = self.spec.input_size
            if tuple(images.shape[-2:]) != (size, size):
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                       antialias=True)
            logits = self.network((images - self.mean) / self.std)
            predictions = {}
            for name, (start, columns, classes) in self._slices.items():
                head = logits[:, [start + c for c in columns]]
                lookup = torch.tensor(classes, dtype=torch.int64, device=head.device)
                predictions[name] = lookup[head.argmax(dim=1)]
            return predictions


def _external_spec_for(path: Path, kind: str | None) -> ExternalClassifierSpec | None:
    if kind is not None and kind != "auto":
        if kind not in EXTERNAL_CLASSIFIERS:
            raise ValueError(f"unknown classifier kind {kind!r}; expected 'auto' or one of {sorted(EXTERNAL_CLASSIFIERS)}")
        return EXTERNAL_CLASSIFIERS[kind]
    for spec in EXTERNAL_CLASSIFIERS.values():
        if path.name == spec.filename:
            return spec
    return None


def _missing_file_message(path: Path, kind: str | None) -> str:
    spec = EXTERNAL_CLASSIFIERS.get(kind or "")
    spec = spec or next((s for s in EXTERNAL_CLASSIFIERS.values() if s.filename == path.name), None)
    if spec is not None:
        return f"classifier weights {path} not found; download {spec.filename} from {spec.source}"
    return (
        f"classifier checkpoint {path} not found; train one with `python train.py task=classifier "
        f"experiment=classifier_fairface data.root=...` (it writes checkpoints/last.ckpt), or give the FairFace "
        f"authors' {EXTERNAL_CLASSIFIERS['fairface_res34_7'].filename}"
    )


def load_classifier(
    path: str | Path,
    attributes: Mapping[str, Sequence[str]] | None = None,
    *,
    kind: str | None = "auto",
    device: str | torch.device = "cpu",
) -> AttributeClassifier | ExternalClassifier:
    """Load a classifier checkpoint and check it against the dataset's attributes.

    Parameters
    ----------
    path : path
        A Lightning checkpoint of :class:`AttributeClassifier`, or an external weight
        file (recognised by its file name, or by ``kind``).
    attributes : mapping, optional
        The dataset's attribute name -> label list. Attributes the classifier also
        predicts must have the same labels in the same order (ours) or labels that map
        by name (external). Attributes it does not predict are logged and skipped.
    kind : str, optional
        ``auto`` or a key of :data:`EXTERNAL_CLASSIFIERS`.
    device : str or torch.device

    Returns
    -------
    AttributeClassifier or ExternalClassifier
        In eval mode, on ``device``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist. The message names where to get it.
    ValueError
        When labels disagree or no attribute is shared.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path, kind))

    spec = _external_spec_for(path, kind)
    if spec is not None:
        return _load_external(path, spec, attributes, device)

    checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    if not (isinstance(checkpoint, dict) and "state_dict" in checkpoint and "hyper_parameters" in checkpoint):
        raise ValueError(
            f"{path} is neither an AttributeClassifier checkpoint (no state_dict and hyper_parameters) nor a "
            f"known external classifier ({', '.join(s.filename for s in EXTERNAL_CLASSIFIERS.values())}); "
            "pass kind=... for an external file with another name"
        )
    # pretrained=False: the checkpoint has the backbone weights, so skip the cache lookup.
    model = AttributeClassifier.load_from_checkpoint(str(path), map_location="cpu", pretrained=False,
                                                     backbone_weights=None)
    if attributes is not None:
        _check_shared_attributes(model.attributes, attributes, path)
    model.weights_path = path
    return model.eval().to(device)


def _check_shared_attributes(model_attributes: Mapping[str, list[str]],
                             attributes: Mapping[str, Sequence[str]], path: Path) -> None:
    shared = [name for name in attributes if name in model_attributes]
    if not shared:
        raise ValueError(
            f"classifier {path} predicts {sorted(model_attributes)}, none of the dataset's attributes "
            f"{sorted(attributes)}; train it on this dataset"
        )
    for name in shared:
        if list(model_attributes[name]) != [str(label) for label in attributes[name]]:
            raise ValueError(
                f"classifier {path} has {name} labels {model_attributes[name]} but the dataset has "
                f"{list(attributes[name])}; class indices would not match"
            )
    skipped = sorted(set(attributes) - set(shared))
    if skipped:
        log.info("classifier %s does not predict %s; those attributes are not scored", path, skipped)


def _load_external(path: Path, spec: ExternalClassifierSpec, attributes, device) -> ExternalClassifier:
    import torchvision

    if attributes is None:
        attributes = {name: list(labels) for name, labels in spec.outputs}
    network = getattr(torchvision.models, spec.arch)(weights=None)
    network.fc = nn.Linear(network.fc.in_features, spec.n_outputs)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    network.load_state_dict(state)
    log.info("external classifier %s from %s", spec.name, path)
    return ExternalClassifier(network, spec, attributes, path).to(device)
