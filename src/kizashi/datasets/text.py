"""Token windows over a text for language-model training (`kizashi lm train`).

Tokenizers:

* ``char``: one token per character of the text's own alphabet (sorted; tiny-Shakespeare
  has 65), so the loss is in nats per character;
* ``byte``: the text's UTF-8 bytes, 256 tokens (nats per byte; per character for ASCII).

Split: the first ``1 - val_fraction`` of the tokens train, the rest validate (a later part
of the text; no window crosses the cut).

:class:`TokenWindows` items are ``ids [T + 1]`` int64: inputs ``ids[:-1]`` and next-token
targets ``ids[1:]``. Training windows start every ``stride`` tokens (shuffled by the
loader); validation windows do not overlap (stride = T), so every validation token is
scored once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from kizashi.atomic import write_json_atomic
from kizashi.errors import KizashiError

TokenizerKind = Literal["char", "byte"]


@dataclass(frozen=True)
class Tokenizer:
    """``kind`` and, for ``char``, the alphabet (index = token id)."""

    kind: TokenizerKind
    alphabet: str = ""

    @classmethod
    def fit(cls, kind: TokenizerKind, text: str) -> Tokenizer:
        if kind == "byte":
            return cls("byte")
        if kind != "char":
            raise ValueError(f"tokenizer must be 'char' or 'byte', got {kind!r}")
        return cls("char", "".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return 256 if self.kind == "byte" else len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        """``[L]`` int64 token ids."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        index = {ch: i for i, ch in enumerate(self.alphabet)}
        try:
            return np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError as err:
            raise KizashiError(f"character {err.args[0]!r} is not in the tokenizer's alphabet") from None

    def decode(self, ids: np.ndarray | torch.Tensor | list[int]) -> str:
        values = np.asarray(ids, dtype=np.int64)
        if self.kind == "byte":
            return values.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        return "".join(self.alphabet[i] for i in values)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, {"kind": self.kind, "alphabet": self.alphabet})

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["kind"], data.get("alphabet", ""))


def read_text(path: str | Path) -> str:
    file = Path(path)
    if not file.is_file():
        raise KizashiError(f"text file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise KizashiError(f"{file}: not UTF-8 text ({err})") from None
    if not text:
        raise KizashiError(f"{file}: empty")
    return text


def split_tokens(ids: np.ndarray, val_fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: the first and the last part of ``ids``; each must hold a window."""
    cut = int(round(len(ids) * (1.0 - val_fraction)))
    train, val = ids[:cut], ids[cut:]
    for name, part in (("training", train), ("validation", val)):
        if len(part) < seq_len + 1:
            raise KizashiError(
                f"the {name} split has {len(part)} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}; "
                "use a longer text, a shorter seq_len or another val_fraction"
            )
    return train, val


class TokenWindows(Dataset):
    """Windows ``ids[s : s + T + 1]`` for ``s = 0, stride, 2 stride, ...`` (module docstring)."""

    def __init__(self, ids: np.ndarray, seq_len: int, stride: int | None = None) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.ids = torch.as_tensor(np.ascontiguousarray(ids), dtype=torch.int64)
        self.seq_len = seq_len
        self.stride = stride or seq_len
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        self.n = max(0, (len(self.ids) - seq_len - 1) // self.stride + 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.n:
            raise IndexError(index)
        start = index * self.stride
        return self.ids[start : start + self.seq_len + 1]
