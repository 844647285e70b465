"""Tokenise once, then build dynamically padded batches (length-grouped for training).

Padding every batch to `max_seq_length` wastes most of the work on GLUE's short sentences
(SST-2 averages ~25 tokens); here each batch is padded only to its longest member, rounded up
to a multiple of `pad_to_multiple_of` so the set of shapes stays small.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .data import Example


@dataclass
class Encoded:
    """A tokenised split: token ids per example (no padding) and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor          # long (classification) or float (regression)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, *, max_length: int,
           token_type_ids: bool, regression: bool) -> Encoded:
    """Tokenise (truncating pairs longest-first to `max_length`)."""
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length,
                    return_token_type_ids=token_type_ids, return_attention_mask=False)
    dtype = torch.float32 if regression else torch.long
    labels = torch.tensor([e.label for e in examples], dtype=dtype)
    return Encoded(enc["input_ids"], enc.get("token_type_ids") if token_type_ids else None, labels)


def collate(data: Encoded, indices: Sequence[int], *, pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad the examples at `indices` to their longest length (rounded up to `multiple`)."""
    longest = max(len(data.input_ids[i]) for i in indices)
    width = -(-longest // multiple) * multiple
    n = len(indices)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if data.token_type_ids is not None else None
    for row, i in enumerate(indices):
        ids = data.input_ids[i]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        if types is not None:
            types[row, : len(ids)] = torch.tensor(data.token_type_ids[i])
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": data.labels[list(indices)]}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def train_order(lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int,
                group_by_length: bool) -> list[list[int]]:
    """The batches (lists of indices) of one training epoch, a pure function of (seed, epoch).

    With `group_by_length`, shuffled indices are cut into mega-batches of 50 batches, each sorted
    by length and split into batches, and the batch order is shuffled again: batches hold similar
    lengths (little padding) while the epoch stays random. Being a pure function is what lets a
    resumed run skip exactly the batches it already did.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s: s + mega], key=lambda j: -lengths[j])]
    batches = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def eval_order(lengths: Sequence[int], *, batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted by length (predictions are put back in order by the caller)."""
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


def iterate(data: Encoded, batches: Sequence[Sequence[int]], *, pad_id: int, multiple: int,
            device: torch.device | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Collate and (if a device is given) move each batch with non-blocking copies."""
    pin = device is not None and device.type == "cuda"
    for idx in batches:
        batch = collate(data, idx, pad_id=pad_id, multiple=multiple)
        if device is not None:
            batch = {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}
        yield batch
