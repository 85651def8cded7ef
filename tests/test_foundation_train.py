"""The population engine against independent references: torch.optim.SGD and plain subsets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsem.config import ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.models import build_model, has_batch_statistics, init_state
from ddsem.train import batch_schedule, evaluate_population, initial_states, train_population

TINY = ModelConfig(width=8, depth=2)


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10


def _reference_sgd(cfg: ModelConfig, state, x, y, tc: TrainConfig):
    """Plain PyTorch: a module, torch.optim.SGD, mean cross-entropy over the kept samples."""
    model = build_model(cfg)
    model.load_state_dict(state)
    opt = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    for _ in range(tc.steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.state_dict()


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_convnet_shapes_and_registry():
    model = build_model(ModelConfig(width=8, depth=3))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 8 * 4 * 4)
    assert has_batch_statistics(build_model(ModelConfig(width=4, norm="batchnorm")))
    assert not has_batch_statistics(model)
    assert build_model(ModelConfig(width=4, norm="none", pooling="max"))(
        torch.zeros(1, 3, 32, 32)
    ).shape == (1, 10)
    with pytest.raises(UserError, match="unknown architecture"):
        build_model(ModelConfig(arch="nope"))


def test_init_state_is_seeded_and_private():
    torch.manual_seed(123)
    before = torch.rand(1)
    a, b, c = init_state(TINY, 0), init_state(TINY, 0), init_state(TINY, 1)
    assert _max_diff(a, b) == 0 and _max_diff(a, c) > 0
    torch.manual_seed(123)
    assert torch.equal(before, torch.rand(1))  # the global stream is untouched


def test_masked_training_equals_training_on_the_subset():
    x, y = _data()
    tc = TrainConfig(steps=15, lr=0.01, momentum=0.9, weight_decay=5e-4)
    state = init_state(TINY, 0)
    weights = torch.ones(2, 12)
    weights[1, 4] = 0
    full, loo = train_population(TINY, x, y, weights, [state, state], tc)
    keep = torch.arange(12) != 4
    assert _max_diff(full, _reference_sgd(TINY, state, x, y, tc)) < 1e-5
    assert _max_diff(loo, _reference_sgd(TINY, state, x[keep], y[keep], tc)) < 1e-5


def test_batched_and_loop_paths_agree():
    x, y = _data()
    tc = TrainConfig(steps=10, batch_size=5)
    weights = torch.ones(3, 12)
    weights[1, 0] = 0
    weights[2, 7] = 0.5
    init = initial_states(TINY, [0, 1, 2])
    loop = train_population(TINY, x, y, weights, init, tc, path="loop")
    batched = train_population(
        TINY, x, y, weights, init, tc, path="batched", max_models_per_launch=2
    )
    for a, b in zip(loop, batched, strict=True):
        assert _max_diff(a, b) < 1e-5
    ea = evaluate_population(TINY, loop, x, y, path="loop", chunk_size=5)
    eb = evaluate_population(TINY, batched, x, y, path="batched", chunk_size=5)
    torch.testing.assert_close(ea.losses, eb.losses, atol=1e-5, rtol=1e-5)
    model = build_model(TINY)
    model.load_state_dict(loop[0])
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x), y, reduction="none")
    torch.testing.assert_close(ea.losses[0], expected, atol=1e-6, rtol=1e-6)
    assert ea.accuracy.shape == (3,)


def test_batchnorm_drops_left_out_samples_and_batched_refuses():
    cfg = ModelConfig(width=4, depth=1, norm="batchnorm")
    x, y = _data(8)
    tc = TrainConfig(steps=5, momentum=0.0)
    state = init_state(cfg, 0)
    weights = torch.ones(1, 8)
    weights[0, 2] = 0
    (loo,) = train_population(cfg, x, y, weights, [state], tc)
    keep = torch.arange(8) != 2
    ref = _reference_sgd(cfg, state, x[keep], y[keep], tc)
    assert _max_diff(loo, ref) < 1e-5  # includes the running statistics
    with pytest.raises(UserError, match="BatchNorm"):
        train_population(cfg, x, y, weights, [state], tc, path="batched")
    with pytest.raises(UserError, match="0/1"):
        train_population(cfg, x, y, weights * 0.5, [state], tc)


def test_minibatch_schedule_is_deterministic_and_covers_epochs():
    tc = TrainConfig(steps=7, batch_size=4)
    a, b = batch_schedule(10, tc, seed=3), batch_schedule(10, tc, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert len(a) == 7 and all(len(s) == 4 for s in a)
    assert sorted(torch.cat(a[:2]).tolist()) == sorted(set(torch.cat(a[:2]).tolist()))
    assert batch_schedule(10, TrainConfig(batch_size=None), 0) is None


def test_bad_weights_are_refused():
    x, y = _data()
    with pytest.raises(UserError, match="weights must be"):
        train_population(
            TINY, x, y, torch.ones(2, 5), initial_states(TINY, [0, 0]), TrainConfig(steps=1)
        )
