"""Tests of the procedural synthetic face set: labels, validation, pixels and learnability."""

import hashlib
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chisquare
from statsmodels.stats.multitest import multipletests

from datamodules.synthetic_faces import (
    DEFAULT_POPULATIONS,
    PHENOTYPES,
    Population,
    SyntheticFaces,
)

logger = logging.getLogger(__name__)


def _probs_with(base: Population, **fixed_labels: str) -> dict:
    """Return a copy of ``base``'s distributions with some phenotypes fixed to one label."""
    probs = {phenotype: dict(dist) for phenotype, dist in base.phenotype_probs.items()}
    for phenotype, label in fixed_labels.items():
        probs[phenotype] = {label: 1.0}
    return probs


def _fixed_faces(seed: int = 3, **fixed_labels: str) -> SyntheticFaces:
    """Return faces from one population that always has the given labels.

    Labels take one variate each whatever their distribution, so the same index gets
    the same pose, lighting and scene under every choice of fixed labels.
    """
    population = Population("fixed", _probs_with(DEFAULT_POPULATIONS[2], **fixed_labels))
    return SyntheticFaces([population], seed=seed)


def _goodness_of_fit_pvalue(observed: np.ndarray, probs: np.ndarray) -> float | None:
    """Return the chi-square goodness-of-fit p-value, or None when fewer than two cells remain.

    Cells of probability 0 are dropped, and cells expecting fewer than 5 counts are pooled.
    """
    expected = observed.sum() * probs
    keep = probs > 0
    assert observed[~keep].sum() == 0, f"labels with probability 0 were drawn: {observed[~keep]}"
    observed, expected = observed[keep], expected[keep]

    small = expected < 5
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
        # A pooled cell still under 5 joins the smallest of the other cells.
        if expected[-1] < 5 and len(expected) > 2:
            smallest = int(np.argmin(expected[:-1]))
            observed[smallest] += observed[-1]
            expected[smallest] += expected[-1]
            observed, expected = observed[:-1], expected[:-1]
    if len(expected) < 2:
        return None
    return float(chisquare(observed, expected).pvalue)


def _label_pvalues(faces: SyntheticFaces, n_faces: int, reference: dict[str, Population]) -> list[float]:
    """Return p-values of the label counts per (group, phenotype) against ``reference[group]``."""
    counts = {
        (group, phenotype): np.zeros(len(labels), dtype=np.int64)
        for group in faces.group_names
        for phenotype, labels in PHENOTYPES.items()
    }
    for index in range(n_faces):
        group, labels = faces.labels(index)
        for phenotype, label in labels.items():
            counts[group, phenotype][PHENOTYPES[phenotype].index(label)] += 1

    pvalues = []
    for (group, phenotype), observed in counts.items():
        dist = reference[group].phenotype_probs[phenotype]
        probs = np.array([dist[label] for label in PHENOTYPES[phenotype]])
        pvalue = _goodness_of_fit_pvalue(observed, probs)
        if pvalue is not None:
            pvalues.append(pvalue)
    return pvalues


# --- label sets and default populations ------------------------------------------------


def test_phenotypes_use_rfw_label_sets():
    assert PHENOTYPES == {
        "skintype": ["type1", "type2", "type3", "type4", "type5", "type6"],
        "eye": ["narrow", "normal"],
        "nose": ["narrow", "wide"],
        "lips": ["small", "big"],
        "hairtype": ["straight", "wavy", "curly", "bald"],
        "haircolor": ["black", "brown", "blonde", "gray", "red"],
    }


def test_default_populations_names_and_support():
    names = [population.name for population in DEFAULT_POPULATIONS]
    assert names == ["syn_African", "syn_Asian", "syn_Caucasian", "syn_Indian"]
    for population in DEFAULT_POPULATIONS:
        for phenotype, labels in PHENOTYPES.items():
            probs = population.phenotype_probs[phenotype]
            assert list(probs) == labels
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
            # Smoothing lets every label occur in every population.
            assert min(probs.values()) > 0.001, (population.name, phenotype, probs)


def test_default_populations_differ_like_rfw():
    probs = {population.name: population.phenotype_probs for population in DEFAULT_POPULATIONS}
    modal_skin = {name: max(p["skintype"], key=p["skintype"].get) for name, p in probs.items()}
    assert modal_skin == {
        "syn_African": "type5",
        "syn_Asian": "type3",
        "syn_Caucasian": "type3",
        "syn_Indian": "type4",
    }
    assert probs["syn_African"]["skintype"]["type5"] + probs["syn_African"]["skintype"]["type6"] > 0.9
    assert probs["syn_Caucasian"]["skintype"]["type1"] + probs["syn_Caucasian"]["skintype"]["type2"] > 0.4
    assert probs["syn_Asian"]["eye"]["narrow"] > 0.9
    for name in ("syn_African", "syn_Caucasian", "syn_Indian"):
        assert probs[name]["eye"]["narrow"] < 0.03, name
    assert probs["syn_African"]["hairtype"]["curly"] > 0.7


# --- argument validation ---------------------------------------------------------------


def test_population_rejects_bad_sum():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    probs["nose"] = {"narrow": 0.5, "wide": 0.49}
    with pytest.raises(ValueError, match=r"'bad'.*'nose'.*sum to 0\.99"):
        Population("bad", probs)


def test_population_accepts_sum_within_tolerance():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    probs["nose"] = {"narrow": 0.5, "wide": 0.5 + 5e-7}
    assert Population("ok", probs).phenotype_probs["nose"]["wide"] == 0.5 + 5e-7


def test_population_rejects_unknown_label():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    probs["haircolor"] = {"black": 0.5, "purple": 0.5}
    with pytest.raises(ValueError, match=r"'haircolor'.*'purple'"):
        Population("bad", probs)


def test_population_rejects_unknown_phenotype():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    probs["freckles"] = {"yes": 1.0}
    with pytest.raises(ValueError, match=r"'bad'.*'freckles'"):
        Population("bad", probs)


def test_population_rejects_missing_phenotype():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    del probs["lips"]
    with pytest.raises(ValueError, match=r"'bad'.*missing.*'lips'"):
        Population("bad", probs)


def test_population_rejects_negative_probability():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    probs["eye"] = {"narrow": -0.5, "normal": 1.5}
    with pytest.raises(ValueError, match=r"'eye'.*'narrow'.*-0\.5"):
        Population("bad", probs)


def test_population_copies_caller_dict():
    probs = _probs_with(DEFAULT_POPULATIONS[0])
    population = Population("copy", probs)
    probs["eye"]["narrow"] = 0.7
    assert population.phenotype_probs["eye"]["narrow"] == DEFAULT_POPULATIONS[0].phenotype_probs["eye"]["narrow"]


def test_render_rejects_small_size():
    faces = SyntheticFaces()
    with pytest.raises(ValueError, match=r"size.*15"):
        faces.render(0, size=15)


def test_faces_reject_bad_arguments():
    with pytest.raises(ValueError, match="-1"):
        SyntheticFaces(seed=-1)
    with pytest.raises(ValueError, match="unique.*syn_Asian"):
        SyntheticFaces([DEFAULT_POPULATIONS[1], DEFAULT_POPULATIONS[1]])
    with pytest.raises(ValueError, match="empty"):
        SyntheticFaces([])
    with pytest.raises(ValueError, match="-3"):
        SyntheticFaces().labels(-3)


# --- labels -----------------------------------------------------------------------------


def test_groups_cycle_with_index():
    faces = SyntheticFaces(seed=5)
    assert faces.group_names == ["syn_African", "syn_Asian", "syn_Caucasian", "syn_Indian"]
    for index in range(12):
        group, labels = faces.labels(index)
        assert group == faces.group_names[index % 4]
        assert set(labels) == set(PHENOTYPES)
        for phenotype, label in labels.items():
            assert label in PHENOTYPES[phenotype]
    assert faces.sample_id(7) == "synthetic:5:7"


def test_label_frequencies_match_populations():
    faces = SyntheticFaces(seed=11)
    reference = {population.name: population for population in DEFAULT_POPULATIONS}
    pvalues = _label_pvalues(faces, 2000, reference)

    assert len(pvalues) == 4 * len(PHENOTYPES)
    rejected, _, _, _ = multipletests(pvalues, alpha=0.01, method="holm")
    assert not rejected.any(), f"Holm-corrected rejections at 0.01, p-values {sorted(pvalues)[:5]}"


def test_label_check_detects_swapped_population():
    # The same check must reject when faces come from a different population.
    faces = SyntheticFaces([DEFAULT_POPULATIONS[0]], seed=11)
    pvalues = _label_pvalues(faces, 500, {"syn_African": DEFAULT_POPULATIONS[2]})
    rejected, _, _, _ = multipletests(pvalues, alpha=0.01, method="holm")
    assert rejected.sum() >= 4


def test_custom_population_frequencies():
    uniform = {phenotype: {label: 1.0 / len(labels) for label in labels} for phenotype, labels in PHENOTYPES.items()}
    skewed = _probs_with(DEFAULT_POPULATIONS[1], hairtype="bald")
    skewed["eye"] = {"narrow": 0.2, "normal": 0.8}
    populations = [Population("uniform", uniform), Population("skewed", skewed)]
    faces = SyntheticFaces(populations, seed=2)

    pvalues = _label_pvalues(faces, 2000, {population.name: population for population in populations})
    rejected, _, _, _ = multipletests(pvalues, alpha=0.01, method="holm")
    assert not rejected.any(), sorted(pvalues)[:5]
    assert all(faces.labels(index)[1]["hairtype"] == "bald" for index in range(1, 200, 2))


# --- pixels -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 33, 64, 128])
def test_render_shape_and_dtype(size):
    image = SyntheticFaces(seed=1).render(2, size=size)
    assert image.shape == (size, size, 3)
    assert image.dtype == np.uint8
    # A face has dark and bright parts and uses a good share of the 8-bit range.
    assert int(image.max()) - int(image.min()) > 100


def test_render_is_deterministic():
    faces = SyntheticFaces(seed=4)
    first = [faces.render(index, 48) for index in (0, 1, 2)]
    # Other calls in between and in another order do not change a face.
    faces.render(9, 48)
    later = [SyntheticFaces(seed=4).render(index, 48) for index in (2, 1, 0)][::-1]
    for a, b in zip(first, later):
        np.testing.assert_array_equal(a, b)

    other_seed = SyntheticFaces(seed=5).render(0, 48)
    assert np.abs(other_seed.astype(int) - first[0].astype(int)).mean() > 5
    assert np.abs(first[1].astype(int) - first[0].astype(int)).mean() > 5


def test_render_same_in_fresh_process():
    code = (
        "import hashlib; from datamodules.synthetic_faces import SyntheticFaces; "
        "print(hashlib.sha256(SyntheticFaces(seed=8).render(13, 40).tobytes()).hexdigest())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = hashlib.sha256(SyntheticFaces(seed=8).render(13, 40).tobytes()).hexdigest()
    assert result.stdout.strip() == expected


def test_render_same_face_at_every_size():
    faces = SyntheticFaces(seed=6)
    small = faces.render(5, 32).astype(float)
    reduced = np.asarray(Image.fromarray(faces.render(5, 128)).resize((32, 32), Image.Resampling.LANCZOS), dtype=float)
    other = faces.render(9, 32).astype(float)
    assert np.abs(small - reduced).mean() < 4.0
    assert np.abs(small - other).mean() > 4 * np.abs(small - reduced).mean()


def test_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None; "
        "from datamodules.synthetic_faces import SyntheticFaces; SyntheticFaces().render(0, 16)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _central_luminance(image: np.ndarray) -> float:
    """Return the median luminance of the central quarter of the image (mostly cheeks and nose)."""
    size = image.shape[0]
    patch = image[size * 3 // 8 : size * 5 // 8, size * 3 // 8 : size * 5 // 8].astype(float)
    return float(np.median(patch @ np.array([0.2126, 0.7152, 0.0722])))


def test_skin_type_darkens_face():
    luminance = np.array(
        [[_central_luminance(_fixed_faces(skintype=skin).render(index, 64)) for skin in PHENOTYPES["skintype"]]
         for index in range(6)]
    )
    # Each row keeps pose, light and scene, and only the skin type changes along it.
    assert (np.diff(luminance, axis=1) < 0).all(), luminance


@pytest.mark.parametrize("phenotype", list(PHENOTYPES))
def test_each_label_changes_face(phenotype):
    for index in range(4):
        images = [_fixed_faces(**{phenotype: label}).render(index, 64).astype(float) for label in PHENOTYPES[phenotype]]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                changed = (np.abs(images[i] - images[j]).max(axis=2) > 20).sum()
                # At least 10 of the 4096 pixels change by more than 20 levels.
                assert changed >= 10, (phenotype, index, PHENOTYPES[phenotype][i], PHENOTYPES[phenotype][j], changed)


# --- face detection and learnability ------------------------------------------------------


def _haar_detection_rate(faces: SyntheticFaces, indices, size: int) -> dict[str, float]:
    """Return the fraction of faces per group where OpenCV's frontal Haar cascade finds a centred face."""
    cv2 = pytest.importorskip("cv2")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    found = {group: [] for group in faces.group_names}
    for index in indices:
        gray = cv2.cvtColor(faces.render(index, size), cv2.COLOR_RGB2GRAY)
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(size // 4, size // 4))
        # Count a face only when a box is centred within a fifth of the side of the
        # image centre, so that detections on hair or background do not count.
        centred = any(
            abs(x + w / 2 - size / 2) < size / 5 and abs(y + h / 2 - size / 2) < size / 5 for x, y, w, h in boxes
        )
        found[faces.labels(index)[0]].append(centred)
    rates = {group: float(np.mean(hits)) for group, hits in found.items()}
    rates["all"] = float(np.mean([hit for hits in found.values() for hit in hits]))
    return rates


def test_haar_finds_faces_small_sample():
    rates = _haar_detection_rate(SyntheticFaces(seed=21), range(40), 128)
    assert rates["all"] >= 0.85, rates


@pytest.mark.slow
def test_haar_finds_faces():
    rates = _haar_detection_rate(SyntheticFaces(seed=0), range(500), 128)
    logger.info("Haar detection rate at 128 px: %s", rates)
    assert rates["all"] >= 0.9, rates
    for group in SyntheticFaces().group_names:
        assert rates[group] >= 0.85, rates


def _phenotype_targets(faces: SyntheticFaces, indices) -> dict[str, np.ndarray]:
    targets = {phenotype: [] for phenotype in PHENOTYPES}
    for index in indices:
        for phenotype, label in faces.labels(index)[1].items():
            targets[phenotype].append(PHENOTYPES[phenotype].index(label))
    return {phenotype: np.array(values) for phenotype, values in targets.items()}


@pytest.mark.slow
def test_cnn_learns_phenotypes():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    faces = SyntheticFaces(seed=123)
    train, held_out = range(0, 2000), range(2000, 2500)

    def images(indices):
        pixels = np.stack([faces.render(index, 64) for index in indices])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0

    x_train, x_test = images(train), images(held_out)
    y_train = {p: torch.from_numpy(t) for p, t in _phenotype_targets(faces, train).items()}
    y_test = _phenotype_targets(faces, held_out)

    def block(channels_in, channels_out):
        return nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(), nn.MaxPool2d(2)
        )

    torch.manual_seed(0)
    trunk = nn.Sequential(
        block(3, 8), block(8, 16), block(16, 32), block(32, 64), nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU()
    )
    heads = nn.ModuleDict({p: nn.Linear(128, len(labels)) for p, labels in PHENOTYPES.items()})
    parameters = list(trunk.parameters()) + list(heads.parameters())
    epochs, batch_size = 6, 64
    steps_per_epoch = -(-len(train) // batch_size)
    optimizer = torch.optim.Adam(parameters, lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=epochs * steps_per_epoch)

    for _ in range(epochs):
        trunk.train()
        order = torch.randperm(len(train))
        for start in range(0, len(train), batch_size):
            batch = order[start : start + batch_size]
            features = trunk(x_train[batch])
            loss = sum(nn.functional.cross_entropy(heads[p](features), y_train[p][batch]) for p in PHENOTYPES)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()

    trunk.eval()
    with torch.no_grad():
        features = trunk(x_test)
        accuracy = {p: float((heads[p](features).argmax(1).numpy() == y_test[p]).mean()) for p in PHENOTYPES}
    majority = {p: float(np.bincount(y_test[p]).max() / len(held_out)) for p in PHENOTYPES}
    logger.info("held-out accuracy %s, majority-class rate %s", accuracy, majority)

    assert accuracy["skintype"] >= majority["skintype"] + 0.10, (accuracy, majority)
    for phenotype in PHENOTYPES:
        assert accuracy[phenotype] >= majority[phenotype] + 0.05, (phenotype, accuracy, majority)
