"""Transfer-learning controls: gradual unfreezing (100% frozen before, 0% after; block by
block from the top) and the optimizer groups' learning rates, on a Stage-1 model with a
tiny BERT saved to a temp dir; then a real Lightning fit in which the LM does not move
while frozen and moves afterwards at its own learning rate."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from kizashi.models.stage1 import Stage1Config, Stage1Model, masked_reconstruction_loss
from kizashi.training.callbacks import GradualUnfreezing
from kizashi.training.transfer import (
    find_lm_adapter,
    fraction_frozen,
    transfer_param_groups,
    unfrozen_blocks,
)
from conftest import save_tiny_lm  # tests/ is on sys.path (rootdir conftest)

SEQ = 8


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("bert") / "tiny", layers=3, max_positions=32)


def make_model(bert_dir) -> Stage1Model:
    torch.manual_seed(0)
    return Stage1Model(Stage1Config(timeframes=("m30", "h1"), seq_len=SEQ, d_model=8, n_heads=2, patch_len=4,
                                    dropout=0.0, encoder="lm", lm_name_or_path=bert_dir))


def test_schedule():
    assert [unfrozen_blocks(e, 2, 3, None) for e in range(4)] == [0, 0, 3, 3]
    assert [unfrozen_blocks(e, 1, 3, 1) for e in range(6)] == [0, 1, 2, 3, 3, 3]
    assert [unfrozen_blocks(e, 0, 3, 2) for e in range(3)] == [2, 3, 3]


def test_gradual_unfreezing_all_at_once(bert_dir):
    model = make_model(bert_dir)
    adapter = find_lm_adapter(model)
    callback = GradualUnfreezing(freeze_epochs=2)
    for epoch, expected in ((0, 1.0), (1, 1.0), (2, 0.0), (3, 0.0)):
        callback.finetune_function(model, epoch, None)
        assert fraction_frozen(adapter.lm_parameters()) == expected
    # the projections around the LM are never frozen
    assert all(p.requires_grad for p in adapter.patch_in.parameters())


def test_gradual_unfreezing_block_by_block_from_the_top(bert_dir):
    model = make_model(bert_dir)
    adapter = find_lm_adapter(model)
    blocks = adapter.lm_blocks()
    callback = GradualUnfreezing(freeze_epochs=1, blocks_per_epoch=1)
    trainable = []
    for epoch in range(5):
        callback.finetune_function(model, epoch, None)
        trainable.append([all(p.requires_grad for p in block.parameters()) for block in blocks])
    assert trainable == [[False] * 3, [False, False, True], [False, True, True], [True] * 3, [True] * 3]
    embeddings = adapter.lm.embeddings.position_embeddings.weight
    assert embeddings.requires_grad  # the non-block parameters follow the bottom block


def test_optimizer_groups_carry_the_lm_learning_rate(bert_dir):
    model = make_model(bert_dir)
    adapter = find_lm_adapter(model)
    GradualUnfreezing(freeze_epochs=3).freeze_before_training(model)
    groups = transfer_param_groups(model, lr=1e-3, weight_decay=0.01, lm_learning_rate_factor=0.1)
    lm_ids = {id(p) for p in adapter.lm_parameters()}
    placeholder = adapter.lm.embeddings.word_embeddings.weight
    in_groups = {id(p): group for group in groups for p in group["params"]}
    assert lm_ids <= set(in_groups)  # frozen now, but in the optimizer for later
    assert id(placeholder) not in in_groups
    for pid, group in in_groups.items():
        assert group["lr"] == pytest.approx(1e-4 if pid in lm_ids else 1e-3)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable <= set(in_groups)


class _Module(L.LightningModule):
    def __init__(self, model: Stage1Model) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        inputs, masked = batch
        out = self.model(inputs, masked)
        return masked_reconstruction_loss(out, {tf: x[..., :4] for tf, x in inputs.items()}, masked)

    def configure_optimizers(self):
        return torch.optim.AdamW(transfer_param_groups(self.model, 1e-2, 0.0, 0.5))


def _identity(batch):
    return batch


class _Snapshot(L.Callback):
    def __init__(self) -> None:
        self.lm, self.stem, self.lrs = [], [], []

    def on_train_epoch_end(self, trainer, pl_module):
        adapter = find_lm_adapter(pl_module)
        self.lm.append(adapter.lm_blocks()[0].attention.self.query.weight.detach().clone())
        self.stem.append(pl_module.model.stems["m30"].pointwise.weight.detach().clone())
        self.lrs.append(sorted({g["lr"] for g in trainer.optimizers[0].param_groups}))


def test_lightning_fit_keeps_the_lm_still_while_frozen(bert_dir, torch_single_thread):
    model = make_model(bert_dir)
    before = find_lm_adapter(model).lm_blocks()[0].attention.self.query.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    batches = [({tf: torch.randn(4, SEQ, 6, generator=g) for tf in ("m30", "h1")},
                {tf: torch.rand(4, SEQ, generator=g) < 0.3 for tf in ("m30", "h1")}) for _ in range(3)]
    snapshot = _Snapshot()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[GradualUnfreezing(freeze_epochs=2), snapshot])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=_identity)
    trainer.fit(_Module(model), train_dataloaders=loader)
    assert torch.equal(snapshot.lm[0], before) and torch.equal(snapshot.lm[1], before)  # frozen epochs 0, 1
    assert not torch.equal(snapshot.lm[2], before)  # trained in epoch 2
    assert not torch.equal(snapshot.stem[0], snapshot.stem[1])  # the rest trains throughout
    assert snapshot.lrs[0] == [pytest.approx(5e-3), pytest.approx(1e-2)]


def test_save_encoder_only_keeps_every_used_weight(tmp_path):
    """The compact copy (token table cut to one row) gives the adapter the same outputs."""
    from kizashi.models.lm_adapter import LMEncoderAdapter, save_encoder_only

    save_tiny_lm(tmp_path / "bert", vocab=50)
    save_tiny_lm(tmp_path / "t5", "t5", vocab=50)
    h = torch.randn(2, 8, 6)
    for name in ("bert", "t5"):
        compact = save_encoder_only(tmp_path / name, tmp_path / f"{name}_compact")
        outputs = []
        for source in (tmp_path / name, compact):
            torch.manual_seed(1)  # the same projections
            adapter = LMEncoderAdapter(6, source, patch_len=4).eval()
            with torch.no_grad():
                outputs.append(adapter(h))
            lm_state = {k: v for k, v in adapter.lm.state_dict().items() if not any(t in k for t in ("word_embeddings", "embed_tokens", "shared"))}
            if source == compact:
                assert all(torch.equal(lm_state[k], full_state[k]) for k in full_state), name
            full_state = lm_state
        assert torch.equal(outputs[0], outputs[1]), name


def test_lm_random_weights_keep_the_architecture(tiny_bert_dir):
    from kizashi.models.lm_adapter import load_lm_encoder

    pretrained, width, family = load_lm_encoder(tiny_bert_dir)
    random, width_r, family_r = load_lm_encoder(tiny_bert_dir, pretrained=False)
    assert (width, family) == (width_r, family_r)
    a, b = dict(pretrained.named_parameters()), dict(random.named_parameters())
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(a[key], b[key])
