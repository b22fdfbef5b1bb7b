"""`BatchRing`: batch buffers in shared memory that DataLoader workers fill again and again, so a batch crosses
from a worker to the training process as a few integers instead of as new shared memory.

    loader = RingLoader(dataset, batch_size=16, num_workers=4, ...)  # what `build_loader` returns
    for batch in loader: ...                                          # a plain dict of tensors, as before

Why. A worker that puts each batch into fresh shared memory pays for creating it, for the kernel zeroing its
pages as they are first written, and for handing its file descriptor to the main process over a socket (torch's
`file_descriptor` strategy: a connection and an authentication handshake for every tensor). On the 2-core VM a
DataLoader with 2 workers moved ~840-1,550 pairs/s of 512x512 batches that way when the data cost nothing to make,
~5,600 with a reused buffer still sent as a tensor, and ~42,000-52,000 when only a token crossed (a
micro-benchmark filling 16 x 512 x 512 batches with a constant). So the main process owns the buffers and each
batch is sent as (ring, worker, slot, use number, size, subjects, slices); subjects and slices travel as lists,
since each small tensor would cost a descriptor hand-over of its own.

How it stays correct. The main process makes a ring for each iterator (`RingLoader._get_iterator`, before the
workers start: forked workers inherit it, spawned ones receive it once), `slots` buffers per worker. A worker takes
a slot only when the main process has released that slot's last use (`released[w, k] == uses[k]`), else it falls
back to fresh shared memory (today's path, never a wait, so a caller that keeps every batch cannot deadlock).
The main process unpacks a token into tensors made with `torch.from_numpy` over a new numpy view of the slot:
such a tensor has a storage of its own, which lives exactly as long as anything that uses it (views, `.numpy()`,
`detach`, `untyped_storage()`), and keeps that numpy view alive. A weakref callback on the view fires when the
last user lets go, and only then is the slot released: no batch a caller still holds is ever overwritten, whether
it holds one batch or all of them. With pinned memory the pin thread's copy is such a user, and the slot is
released as soon as it is copied.
"""

from __future__ import annotations

import threading
import uuid
import weakref

import numpy as np
import torch
from torch.utils.data import get_worker_info

_RINGS: weakref.WeakValueDictionary[str, BatchRing] = weakref.WeakValueDictionary()
"""The rings of this (main) process by id: where an arriving token finds its buffers."""


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory whose pages are only allocated when written (`share_memory_()`
    would copy, touching all of them); torch's own route, as default_collate uses in workers."""
    proto = torch.empty(0, dtype=dtype)
    size = int(np.prod(shape))
    try:
        storage = proto._typed_storage()._new_shared(size)
    except AttributeError:  # a torch without it: correct, one copy more
        return torch.empty(shape, dtype=dtype).share_memory_()
    return proto.new(storage).view(shape)


class BatchRing:
    """`slots` batch buffers per worker: images (batch, *image_shape) int16, labels (batch, *label_shape) uint8."""

    def __init__(self, workers: int, slots: int, batch_size: int, image_shape: tuple[int, ...],
                 label_shape: tuple[int, ...]):
        self.id = uuid.uuid4().hex
        self.batch_size, self.slots = batch_size, slots
        self.images = shared_empty((workers, slots, batch_size, *image_shape), torch.int16)
        self.labels = shared_empty((workers, slots, batch_size, *label_shape), torch.uint8)
        self.released = shared_empty((workers, slots), torch.int64)
        """Per slot, the use number the main process last let go of (written by it, read by the worker)."""
        self.released.zero_()
        self._uses: np.ndarray | None = None  # per slot, the use number this worker last handed out
        self._held: dict[tuple[int, int], tuple] = {}  # main process: weakrefs of batches callers still hold
        self._lock = threading.RLock()
        _RINGS[self.id] = self

    def __getstate__(self) -> dict:
        # To a spawned worker: the shared tensors (sent once) and sizes; no process-local state.
        return {**self.__dict__, "_uses": None, "_held": {}, "_lock": None, "_released_np": None}

    def _released(self) -> np.ndarray:
        """`released` as numpy in this process (cheap to index; item stores of int64 are atomic)."""
        if self.__dict__.get("_released_np") is None:
            self._released_np = self.released.numpy()
        return self._released_np

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- In a worker ----------------------------------------------------------------------------------------------

    def take(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, tuple] | None:
        """(images, labels, token) of a free slot of this worker, sized `batch`; None outside a worker, for a batch
        larger than the ring's, or when every slot is still held by the main process."""
        info = get_worker_info()
        if info is None or batch > self.batch_size:
            return None
        w = info.id
        if self._uses is None:
            self._uses = np.zeros(self.slots, np.int64)
        released = self._released()[w]
        for k in range(self.slots):
            if released[k] == self._uses[k]:
                self._uses[k] += 1
                return (self.images[w, k, :batch], self.labels[w, k, :batch],
                        (self.id, w, k, int(self._uses[k]), batch))
        return None

    def give_back(self, token: tuple) -> None:
        """Undo `take` for a batch that was not sent (its read failed): the slot is free again."""
        self._uses[token[2]] -= 1

    # --- In the main process ----------------------------------------------------------------------------------------

    def unpack(self, w: int, k: int, use: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors of slot (w, k), each with a storage of its own; the slot is released (use number `use`)
        once both are gone, with everything made from them."""
        images, labels = self.images[w, k, :batch].numpy(), self.labels[w, k, :batch].numpy()
        left, ring = [2], weakref.ref(self)  # weakly: no cycle through the callbacks keeps a ring's memory

        def gone(_ref) -> None:
            self = ring()
            if self is None:  # the ring's workers are gone: nobody waits for the slot
                return
            with self._lock:
                left[0] -= 1
                if left[0] == 0:
                    self._held.pop((w, k), None)
                    self._released()[w, k] = use

        with self._lock:
            self._held[(w, k)] = (weakref.ref(images, gone), weakref.ref(labels, gone))
        return torch.from_numpy(images), torch.from_numpy(labels)


class RingBatch:
    """What a worker sends for a batch in a ring slot: the token and the small per-item values. Unpickled in the
    main process as the plain batch dict {"image", "label", "subject", "slice"}."""

    def __init__(self, token: tuple, subjects: list[int], slices: list[int]):
        self.token, self.subjects, self.slices = token, subjects, slices

    def __reduce__(self):
        return _unpack_batch, (self.token, self.subjects, self.slices)


def _unpack_batch(token: tuple, subjects: list[int], slices: list[int]) -> dict:
    ring_id, w, k, use, batch = token
    ring = _RINGS.get(ring_id)
    if ring is None:  # cannot happen while the loader iterator that made the ring lives
        raise RuntimeError(f"a batch arrived for batch ring {ring_id}, which this process no longer has")
    images, labels = ring.unpack(w, k, use, batch)
    return {"image": images, "label": labels, "subject": torch.tensor(subjects), "slice": torch.tensor(slices)}
