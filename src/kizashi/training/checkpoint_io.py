"""Checkpoint files written atomically (DESIGN: a crash never leaves a half-written file).

``Trainer(plugins=[AtomicCheckpointIO()])`` routes every checkpoint the trainer writes
(``ModelCheckpoint``, ``SignalCheckpoint``, ``trainer.save_checkpoint``) through
:func:`kizashi.atomic.atomic_path`: the file is written beside its final name and renamed
onto it. Under DDP only rank 0 writes (Lightning calls the plugin there only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from kizashi.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose saves are write-then-rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options=storage_options)
