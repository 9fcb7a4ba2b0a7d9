"""TrainingStep: one eager step (loss, backward, clipping, optimizer, schedule) against the
same step written out by hand, and its argument checks."""

from __future__ import annotations

import copy

import pytest
import torch

from kizashi.training.train_step import TrainingStep


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def test_steps_match_the_hand_written_loop_with_clipping_and_schedule():
    x = torch.randn(2, 16, 6, generator=torch.Generator().manual_seed(1))
    model, optimizer, scheduler = _setup()
    reference = copy.deepcopy(model)
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05)
    ref_scheduler = torch.optim.lr_scheduler.LambdaLR(ref_optimizer, lambda step: 1.0 / (1 + step))

    def loss_of(module):
        return lambda batch: (module(batch) ** 2).mean() * 100.0  # large: clipping acts

    step = TrainingStep(loss_of(model), list(model.parameters()), optimizer, scheduler, grad_clip=0.5,
                        device_type="cpu")
    for index in range(4):
        loss = step(x[index % 2])
        ref_loss = loss_of(reference)(x[index % 2])
        ref_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        ref_optimizer.step()
        ref_optimizer.zero_grad(set_to_none=True)
        ref_scheduler.step()
        assert norm > 0.5  # the clip was active
        assert not loss.requires_grad
        torch.testing.assert_close(loss, ref_loss.detach())
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
        assert p.grad is None  # reset after every step
    assert scheduler.last_epoch == 4


def test_cpu_autocast_to_bfloat16_reaches_the_loss():
    model, optimizer, _ = _setup()
    seen = []

    def loss_of(batch):
        out = model(batch)
        seen.append(out.dtype)
        return out.float().pow(2).mean()

    TrainingStep(loss_of, list(model.parameters()), optimizer, autocast_dtype=torch.bfloat16,
                 device_type="cpu")(torch.randn(4, 6))
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_arguments_are_checked():
    model, optimizer, _ = _setup()
    with pytest.raises(ValueError, match="grad_clip"):
        TrainingStep(lambda b: b.sum(), list(model.parameters()), optimizer, grad_clip=0.0)
    frozen = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        TrainingStep(lambda b: b.sum(), list(frozen.parameters()), optimizer)
