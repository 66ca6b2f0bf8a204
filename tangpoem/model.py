"""The tutorial's network: Embedding -> LSTM (num_layers) -> Linear over the vocabulary.

`dropout` (0 in the tutorial) drops LSTM outputs while training: between layers (nn.LSTM's own) and
before the output layer; `embedding_dropout` drops the embeddings the first layer reads. Together they
are the non-recurrent connections of Zaremba et al. (2014).
"""

from __future__ import annotations

import paddle
from paddle import nn

from tangpoem.config import ModelConfig

__all__ = ["ModelConfig", "PoetryModel"]


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
        self.linear = nn.Linear(config.hidden_dim, config.vocab_size)

    def forward(
        self, ids: paddle.Tensor, hidden: tuple[paddle.Tensor, paddle.Tensor] | None = None
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor]]:
        batch_size, seq_len = ids.shape
        embeds = self.embed(ids)  # [batch, seq_len, embedding_dim]; nn.LSTM is batch-first
        output, hidden = self.lstm(embeds, hidden)
        output = self.dropout(output)
        logits = self.linear(output.reshape([batch_size * seq_len, self.config.hidden_dim]))
        return logits, hidden

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
