"""Title guidance: classifier-free guidance toward the title (Sanchez et al. 2023, "Stay on topic with
classifier-free guidance"; Hugging Face's `guidance_scale`).

A model trained with titles, a share of its poems shown without theirs, is two models in one: p(x | title)
and p(x). Guidance draws each character from

    log p(x | title) + (g - 1) * (log p(x | title) - log p(x))     (renormalised)

so with g > 1 the characters the title makes likelier than they are anyway count for more: the poem keeps
to its subject instead of drifting into the lines any poem could have. g = 1 is the plain model.

`GuidedStep` is a Step over twice the rows: row i reads the title, row n + i the same poem without it (the
twin is fed every character row i is). Its state shows both halves side by side, [layers, n, 2 * hidden],
so whatever the decoder does to a row's state (a draft's couplet copied to the others, a draft held while
the others catch up) it does to the twin as well, and the loop needs to know nothing of guidance.
"""

from __future__ import annotations

import numpy as np

from tangpoem.generation.steps import Step, log_softmax, peek_rows


class GuidedStep:
    """`step` with every row twinned by an untitled one; logits are the guided log-probabilities."""

    def __init__(self, step: Step, scales: np.ndarray, titled: tuple[np.ndarray, np.ndarray],
                 untitled: tuple[np.ndarray, np.ndarray]):  # fmt: skip
        """scales: each row's g; titled/untitled: each row's primed (h, c), with and without its title."""
        self.inner = step
        self.scales = np.asarray(scales, dtype=np.float32)[:, None]
        self.n = len(self.scales)
        self.set_state(*(np.concatenate([a, b], axis=2) for a, b in zip(titled, untitled, strict=True)))

    def reset(self, batch: int) -> None:
        self.inner.reset(2 * batch)
        self.n = batch

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None:
        n = self.n
        out = self.inner.step(np.concatenate([ids, ids]), [*rows, *(r + n for r in rows)])
        if out is None:
            return None
        k = len(rows)
        scales = self.scales[rows]
        guided = (scales != 1)[:, 0]
        if not guided.any():
            return out[:k]
        # rows at g = 1 (a request without guidance batched with one that has it) keep their logits as they
        # are, to the bit, so a batch still writes what each request writes alone
        # float32 copies (boolean indexing copies), as the numpy step's adaptive softmax computes them
        titled = log_softmax(out[:k][guided].astype(np.float32))
        untitled = log_softmax(out[k:][guided].astype(np.float32))
        titled -= untitled
        titled *= scales[guided]
        titled += untitled
        logits = out[:k].astype(np.float32)
        logits[guided] = titled
        return logits

    def peek(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """A look ahead from copies of some rows (and their twins): each copy keeps its row's scale."""
        scales = self.scales
        self.scales = scales[rows]
        try:
            return peek_rows(self, rows, ids)
        finally:
            self.scales = scales

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        h, c = self.inner.get_state()
        n = self.n
        return np.concatenate([h[:, :n], h[:, n:]], axis=2), np.concatenate([c[:, :n], c[:, n:]], axis=2)

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None:
        half = h.shape[2] // 2
        self.n = h.shape[1]
        self.inner.set_state(
            np.concatenate([h[..., :half], h[..., half:]], axis=1),
            np.concatenate([c[..., :half], c[..., half:]], axis=1),
        )
