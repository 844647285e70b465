"""transformers' `Trainer` on fishtune's batches and schedule: the same training, bit for bit.

    Trainer = fishtune_batches_trainer(transformers.Trainer, lengths, batch_size=32, seed=1)
    Trainer(model=..., args=..., train_dataset=..., callbacks=[FishCallback(mask=...)]).train()

The subclass takes each epoch's batches from `batching.train_order(lengths, seed, epoch)` (through a
batch sampler that accelerate's loader moves to the next epoch with `set_epoch`) and its learning
rate from `train.linear_schedule` (fishtune's first step runs at lr/w, the Trainer's at 0). The
loader gets its own generator, so it draws nothing from the global torch RNG: after the Trainer's
`set_seed(args.seed)` the dropout stream is then the one `fishtune run` starts with
`torch.manual_seed(seed)`. With the data collator padding to `train.pad_to_multiple_of`, the rest
(AdamW, clipping, the mask's hooks) is already the same, and `tests/test_api.py` checks that the
weights come out bit-identical. Used by `scripts/trainer_callback_mrpc.py` to separate the Trainer's
own batch order from the mask; useful to anyone who wants a fishtune run inside their Trainer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from .batching import train_order
from .train import linear_schedule


class FishtuneBatches:
    """fishtune's batches (lists of dataset indices) of the current epoch."""

    def __init__(self, lengths: Sequence[int], *, batch_size: int, seed: int, group_by_length: bool = True):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(train_order(self.lengths, batch_size=self.batch_size, seed=self.seed, epoch=self.epoch,
                                group_by_length=self.group_by_length))

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def fishtune_batches_trainer(trainer_cls: type, lengths: Sequence[int], *, batch_size: int, seed: int,
                             group_by_length: bool = True) -> type:
    """A subclass of `trainer_cls` (transformers' Trainer) that trains on fishtune's batches and schedule.

    `lengths`: the token count of each training example, in dataset order (as `train_order` sees them).
    """

    class FishtuneBatchesTrainer(trainer_cls):
        def get_train_dataloader(self) -> DataLoader:
            batches = FishtuneBatches(lengths, batch_size=batch_size, seed=seed, group_by_length=group_by_length)
            loader = DataLoader(self.train_dataset, batch_sampler=batches, collate_fn=self.data_collator,
                                generator=torch.Generator().manual_seed(seed))   # not the global RNG
            return self.accelerator.prepare(loader)

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = linear_schedule(optimizer or self.optimizer, total_steps=num_training_steps,
                                                    warmup_steps=round(self.args.warmup_ratio * num_training_steps))
            return self.lr_scheduler

    return FishtuneBatchesTrainer
