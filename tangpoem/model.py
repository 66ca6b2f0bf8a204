"""The tutorial's network: Embedding -> LSTM (num_layers) -> Linear over the vocabulary.

With `output_cutoffs` the Linear is an adaptive softmax (Grave et al. 2016, `AdaptiveOutput`): the most
frequent characters keep a full-width output, the rarer ones sit in clusters reached through narrower
projections, so the output layer, most of a training step, costs a fraction. Its forward gives
log-probabilities over the whole vocabulary (they sum to 1), which serve wherever logits do.

`dropout` (0 in the tutorial) drops LSTM outputs while training: between layers (nn.LSTM's own) and
before the output layer; `embedding_dropout` drops the embeddings the first layer reads. Together they
are the non-recurrent connections of Zaremba et al. (2014).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from tangpoem.config import ModelConfig

__all__ = ["AdaptiveOutput", "ModelConfig", "PoetryModel"]


class AdaptiveOutput(nn.Layer):
    """An adaptive softmax over the vocabulary. Characters are ordered by training frequency (`rank`, a
    buffer: the id -> rank map the run chose); the head scores the first cutoff ranks and one entry per
    cluster, cluster k scores its ranks from a hidden_dim / 4**(k+1) projection."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.bounds = config.clusters()
        self.shortlist = config.output_cutoffs[0]
        self.head = nn.Linear(config.hidden_dim, self.shortlist + len(self.bounds))
        self.tail_proj = nn.LayerList([nn.Linear(config.hidden_dim, d, bias_attr=False) for _, _, d in self.bounds])
        self.tail_out = nn.LayerList([nn.Linear(d, end - start) for start, end, d in self.bounds])
        self.register_buffer("rank", paddle.arange(config.vocab_size, dtype="int64"), persistable=True)

    def set_ranks(self, rank: paddle.Tensor) -> None:
        """rank[id]: the character's place by frequency (a permutation of range(vocab))."""
        self.rank.set_value(rank.astype("int64"))

    def forward(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """Log-probabilities [rows, vocab] in id order."""
        head = F.log_softmax(self.head(hidden), axis=-1)
        parts = [head[:, : self.shortlist]]
        for k in range(len(self.bounds)):  # not zip(..., strict=True): paddle.jit.to_static cannot convert it
            cluster = F.log_softmax(self.tail_out[k](self.tail_proj[k](hidden)), axis=-1)
            parts.append(cluster + head[:, self.shortlist + k].unsqueeze(-1))
        by_rank = paddle.concat(parts, axis=-1)
        # index_select, not gather(axis=1): on Paddle 2.6.2 the latter's gradient is wrong at this size
        return paddle.index_select(by_rank, self.rank, axis=1)


class PoetryModel(nn.Layer):
    """Input [batch, seq_len] ids; output logits [batch * seq_len, vocab] and the (h, c) state.

    h and c are [num_layers, batch, hidden_dim]; passing them back in steps the network on, which is
    how the generator feeds one character at a time.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_dim, config.num_layers, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        if config.output_cutoffs:
            self.adaptive = AdaptiveOutput(config)
        else:
            self.linear = nn.Linear(config.hidden_dim, config.vocab_size)

    def forward(
        self, ids: paddle.Tensor, hidden: tuple[paddle.Tensor, paddle.Tensor] | None = None
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor]]:
        batch_size, seq_len = ids.shape
        embeds = self.embed(ids)  # [batch, seq_len, embedding_dim]; nn.LSTM is batch-first
        output, hidden = self.lstm(embeds, hidden)
        output = self.dropout(output)
        logits = self.output(output.reshape([batch_size * seq_len, self.config.hidden_dim]))
        return logits, hidden

    def output(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """Logits [rows, vocab] of hidden states [rows, hidden_dim] (log-probabilities when adaptive)."""
        return self.adaptive(hidden) if self.config.output_cutoffs else self.linear(hidden)

    def embed(self, ids: paddle.Tensor) -> paddle.Tensor:
        """Embeddings of ids, with embedding dropout while training."""
        embeds = self.embeddings(ids)
        # only when asked: a Dropout(0) would still draw from the generator and shift the dropout
        # masks of recipes trained before this option existed
        if self.config.embedding_dropout > 0:
            embeds = self.embedding_dropout(embeds)
        return embeds

    def zero_state(self, batch_size: int) -> tuple[paddle.Tensor, paddle.Tensor]:
        shape = [self.config.num_layers, batch_size, self.config.hidden_dim]
        return paddle.zeros(shape, dtype="float32"), paddle.zeros(shape, dtype="float32")
