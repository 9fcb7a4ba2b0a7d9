"""GraphedTrainingStep: a training step recorded as a CUDA graph and replayed. On the CPU the
argument checks and the message without CUDA; on the GPU (marked ``gpu``) the replayed steps
against the same steps run eagerly (losses and parameters), dropout's fresh masks per replay,
and a batch of another shape refused."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kizashi.models.optim import adamw, param_groups
from kizashi.models.registry import create_model
from kizashi.training.cuda_graph import GraphedTrainingStep

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _lm_loss(model):
    def loss_of(ids):
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    return loss_of


def test_arguments_are_checked_and_the_cpu_is_refused_with_a_reason():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="eager_steps"):
        GraphedTrainingStep(lambda x: model(x).sum(), list(model.parameters()), optimizer, eager_steps=0)
    with pytest.raises(ValueError, match="grad_clip"):
        GraphedTrainingStep(lambda x: model(x).sum(), list(model.parameters()), optimizer, grad_clip=0.0)
    frozen = torch.nn.Linear(4, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        GraphedTrainingStep(lambda x: frozen(x).sum(), list(frozen.parameters()), optimizer)
    if torch.cuda.is_available():
        pytest.skip("the CPU message needs a machine without CUDA")
    with pytest.raises(RuntimeError, match="needs CUDA"):
        GraphedTrainingStep(lambda x: model(x).sum(), list(model.parameters()), optimizer)


def _train(model, batches, *, graphed, clip=1.0, dtype=torch.bfloat16):
    optimizer = adamw(param_groups(model, 0.01, 1e-3), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    loss_of = _lm_loss(model)
    losses = []
    if graphed:
        step = GraphedTrainingStep(loss_of, list(model.parameters()), optimizer, scheduler, grad_clip=clip,
                                   autocast_dtype=dtype, eager_steps=2)
        for batch in batches:
            losses.append(step(batch))
        assert step.recorded
    else:
        for batch in batches:
            with torch.autocast("cuda", dtype=dtype):
                loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(loss.detach())
    torch.cuda.synchronize()
    return torch.stack(losses).float().cpu()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["bk_phase2", "bk_phase1"])
def test_replayed_steps_match_the_same_steps_run_eagerly(name):
    torch.manual_seed(0)
    model = create_model(name, "small", vocab_size=65, dropout=0.0).cuda()
    twin = copy.deepcopy(model)
    start = torch.cat([p.detach().flatten().float() for p in model.parameters()])
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 65, (2, 129), generator=generator).cuda() for _ in range(8)]
    eager = _train(model, batches, graphed=False)
    replayed = _train(twin, batches, graphed=True)
    # steps 1-2 run eagerly in both, step 3 is recorded and replayed, steps 4-8 are replays
    assert torch.allclose(replayed, eager, rtol=2e-3, atol=2e-3), (replayed, eager)
    moved_eager = torch.cat([p.detach().flatten().float() for p in model.parameters()]) - start
    moved_replayed = torch.cat([p.detach().flatten().float() for p in twin.parameters()]) - start
    assert moved_eager.norm() > 0
    assert (moved_replayed - moved_eager).norm() <= 0.05 * moved_eager.norm()


@pytest.mark.gpu
@needs_cuda
def test_dropout_draws_fresh_masks_on_every_replay_and_another_shape_is_refused():
    torch.manual_seed(0)
    model = create_model("bk_phase1", "small", vocab_size=65, dropout=0.3).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # parameters fixed: only the masks differ
    step = GraphedTrainingStep(_lm_loss(model), list(model.parameters()), optimizer, eager_steps=1)
    batch = torch.randint(0, 65, (2, 65), device="cuda")
    losses = torch.stack([step(batch) for _ in range(4)]).cpu()
    assert step.recorded
    assert len(set(losses[1:].tolist())) == 3, losses  # three replays, three different masks
    with pytest.raises(ValueError, match="recorded for a batch"):
        step(torch.randint(0, 65, (2, 33), device="cuda"))
