"""The analyses on a set in ZCA space (MTT's --zca): the real images a model learns or is tested
on are whitened with the set's transform, pixel statistics are taken after inverting it, and sets
of different spaces never share one real-data model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddsem.data import normalize
from ddsem.errors import UserError

TINY = {"width": 4, "test_limit": 40, "out": "figs"}


@pytest.fixture
def spaces(workspace, synthetic, tmp_path, monkeypatch):
    """Two sets of the same real images: 'plain' (normalised) and 'white' (ZCA space)."""
    from ddsem.db.sets import add_distilled_set
    from ddsem.jobs.common import fit_zca, zca_compute

    monkeypatch.chdir(tmp_path)
    arrays = fit_zca(workspace.db, synthetic)
    idx = np.arange(0, 200, 20)
    x = normalize(synthetic.train_x[idx]).numpy()
    y = synthetic.train_y[idx]
    add_distilled_set(workspace.db, "plain", "dm", x, y)
    z = zca_compute(arrays).forward_np(x)
    add_distilled_set(workspace.db, "white", "tm", z, y, zca_id=arrays.id)
    return zca_compute(arrays)


def test_recognition_tests_a_zca_set_against_whitened_real_images(
    workspace, synthetic, spaces, monkeypatch
):
    from ddsem.analyses import recognition as compute
    from ddsem.jobs.analyze import recognition as job

    seen = {}
    real = compute.recognition_curves

    def spy(model, train, real_xy, test, sets, *a, **k):
        seen["real"], seen["test"] = real_xy[0], test[0]
        return real(model, train, real_xy, test, sets, *a, **k)

    monkeypatch.setattr(compute, "recognition_curves", spy)
    req = job.RecognitionRequest(set_names=("white",), runs=1, epochs=1, data=synthetic, **TINY)
    result = job.run(workspace, req)
    assert result.params["zca"]["eps"] == spaces.eps
    expected = spaces.forward(normalize(synthetic.train_x))
    assert torch.allclose(seen["real"], expected, atol=1e-5)  # whitened, not normalised
    plain = job.run(workspace, job.RecognitionRequest(set_names=("plain",), runs=1, epochs=1,
                                                      data=synthetic, **TINY))  # fmt: skip
    assert "zca" not in plain.params and plain.analysis_ids != result.analysis_ids


def test_sets_of_two_spaces_are_refused_in_one_real_model_analysis(workspace, synthetic, spaces):
    from ddsem.jobs.analyze import extra_training, recognition

    before = workspace.db  # nothing is written before the refusal
    for job, extra in ((recognition, {"runs": 1}), (extra_training, {"runs": 1})):
        req = job.__dict__[[n for n in job.__all__ if n.endswith("Request")][0]](
            set_names=("plain", "white"), data=synthetic, **TINY, **extra
        )
        with pytest.raises(UserError, match="different spaces"):
            job.run(workspace, req)
    assert before is workspace.db


def test_clipping_a_zca_set_clips_its_pixels_not_its_whitened_values(workspace, synthetic, spaces):
    from ddsem.jobs.analyze import clipping as job

    req = job.ClippingRequest(set_names=("white", "plain"), runs=1, steps=2, data=synthetic,
                              **TINY)  # fmt: skip
    out = job.run(workspace, req).as_json()
    by_set = {s["set"]: s for s in out["sets"]}
    # real pixels, whitened then inverted again: in [0, 1] but for float error at 0 and 1
    # (in whitened space some 40% of the values lie outside [0, 1])
    assert by_set["plain"]["outside_fraction"] < 0.01
    assert by_set["white"]["outside_fraction"] < 0.01
    white = spaces.forward(normalize(synthetic.train_x[:10]))
    assert ((white < 0) | (white > 1)).float().mean() > 0.2


def test_mixing_adds_whitened_real_images_to_a_zca_set(workspace, synthetic, spaces, monkeypatch):
    from ddsem.analyses import mixing as compute
    from ddsem.jobs.analyze import mixing as job

    seen = []
    real = compute.mixed_accuracies

    def spy(images, labels, *a, **k):
        seen.append(images)
        return real(images, labels, *a, **k)

    monkeypatch.setattr(compute, "mixed_accuracies", spy)
    req = job.MixingRequest(set_names=("white",), counts=(0, 1), runs=1, steps=2, data=synthetic,
                            **TINY)  # fmt: skip
    out = job.run(workspace, req).as_json()
    assert out  # stored and summarised
    # every training tensor (the set + real images, the random-real baseline) is in ZCA space:
    # inverting it gives pixels in [0, 1]
    for images in seen:
        pixels = spaces.pixels(images)
        assert pixels.min() > -1e-3 and pixels.max() < 1 + 1e-3
    assert any(len(x) > 10 for x in seen)  # real images were added
