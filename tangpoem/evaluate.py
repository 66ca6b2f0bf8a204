"""How good a checkpoint is: held-out cross-entropy (padding excluded), perplexity, well-formed samples.

    python -m tangpoem.evaluate --model-path CKPT [--data-path NPZ] [--samples 8] [--temperature 0.8]

The held-out split is the npz's (about 2% of the poems, chosen by a hash of each poem's text). For
scale, on that split: unigram 6.60, bigram 5.58, trigram 5.37 nats per character.

A poem counts as well formed when it has an even number of lines, all 5 or all 7 characters long,
ending alternately in ， and 。. The poems are sampled from <START> at --temperature (plain softmax
sampling: no top-k/top-p, no form rules; this measures the network, not the generator's constraints).
Also here: the small decoders the trainer uses for its logged samples (greedy continuation, plain
sampling); the full generator is `tangpoem.generate`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable

import numpy as np
import paddle

from tangpoem.checkpoint import load_checkpoint
from tangpoem.config import add_config_args, config_from_args
from tangpoem.data import EOP, PAD, START, PoemData, load_npz
from tangpoem.dataset import target_mask
from tangpoem.device import setup_device
from tangpoem.errors import TangpoemError, cli_main
from tangpoem.loss import sequence_loss
from tangpoem.model import PoetryModel

EVAL_BATCH_SIZE = 128  # the masked mean does not depend on it; large batches are just faster
LINE = re.compile(r"([^，。！？；]+)([，。！？；])")


def heldout_batches(
    poems: PoemData, max_poems: int = 0, batch_size: int = EVAL_BATCH_SIZE, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of the held-out poems (a random max_poems of them, 0: all), grouped by exact
    length so that every poem starts at <START> from the zero state, as the generator reads it.

    (The npz pads in front; a poem behind padding would be scored from another state.)
    """
    index = np.flatnonzero(poems.heldout)
    if max_poems and max_poems < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, max_poems, replace=False))
    batches = []
    for length in np.unique(poems.lengths[index]):
        same = index[poems.lengths[index] == length]
        for i in range(0, len(same), batch_size):
            rows = poems.data[same[i : i + batch_size], poems.maxlen - length :].astype(np.int64)
            batches.append((rows[:, :-1], rows[:, 1:]))
    return batches


def heldout_loss(
    model: PoetryModel, batches: Iterable, pad_id: int, start_id: int, max_batches: int = 0
) -> tuple[float, int]:
    """Mean next-character cross-entropy in nats over the non-padding positions of up to max_batches
    (inputs, targets) batches (0: all); returns (nats per character, characters counted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with paddle.no_grad():
        for i, (inputs, targets) in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            inputs, targets = paddle.to_tensor(inputs), paddle.to_tensor(targets)
            loss, n = sequence_loss(model, inputs, targets, target_mask(targets, pad_id, start_id))
            total += loss.item() * n  # sum, not mean of means: batches differ in length
            count += n
    if was_training:
        model.train()
    return (total / count if count else float("nan")), count


def well_formed(text: str) -> bool:
    """Even number of lines (>= 2), all 5 or all 7 characters, ending ，。，。…"""
    lines = LINE.findall(text)
    if not lines or "".join(a + b for a, b in lines) != text or len(lines) % 2:
        return False
    lengths = {len(body) for body, _ in lines}
    ends_ok = all(end == ("，" if i % 2 == 0 else "。") for i, (_, end) in enumerate(lines))
    return ends_ok and len(lengths) == 1 and lengths.pop() in (5, 7)


def _decode(vocab: list[str], ids: list[int]) -> str:
    specials = {EOP, START, PAD}
    return "".join(vocab[i] for i in ids if vocab[i] not in specials)


def greedy_continue(model: PoetryModel, vocab: list[str], start: str, max_len: int = 64) -> str:
    """start + the most likely next characters until <EOP> (or max_len new ones). Unknown characters
    in start are skipped."""
    word2ix = {w: i for i, w in enumerate(vocab)}
    ids = [word2ix[START]] + [word2ix[ch] for ch in start if ch in word2ix]
    eop = word2ix[EOP]
    out = list(ids[1:])
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        logits, hidden = model(paddle.to_tensor([ids], dtype="int64"))
        for _ in range(max_len):
            nxt = int(logits.numpy()[-1].argmax())
            if nxt == eop:
                break
            out.append(nxt)
            logits, hidden = model(paddle.to_tensor([[nxt]], dtype="int64"), hidden)
    if was_training:
        model.train()
    return _decode(vocab, out)


def sample_poems(
    model: PoetryModel, vocab: list[str], n: int, temperature: float = 1.0, seed: int = 0, max_len: int = 200
) -> list[str]:
    """n poems sampled from <START> as one batch (temperature 0: greedy); a poem ends at <EOP>."""
    word2ix = {w: i for i, w in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    eop = word2ix[EOP]
    tokens = np.full((n, 1), word2ix[START], dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    hidden = None
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        for _ in range(max_len):
            logits, hidden = model(paddle.to_tensor(tokens), hidden)
            logits = logits.numpy().astype(np.float64)
            if temperature <= 0:
                nxt = logits.argmax(axis=1)
            else:
                z = logits / temperature
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                nxt = np.array([rng.choice(len(vocab), p=row) for row in p])
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    if t == eop:
                        done[i] = True
                    else:
                        out[i].append(t)
            if done.all():
                break
            tokens = nxt.reshape(n, 1).astype(np.int64)
    if was_training:
        model.train()
    return [_decode(vocab, ids) for ids in out]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tangpoem.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8, help="poems to sample for the form check (default: 8)")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    ckpt = load_checkpoint(cfg.model_path)
    poems = load_npz(cfg.data_path)
    if ckpt.vocab != poems.ix2word:
        raise TangpoemError(
            f"{ckpt.path} has a vocabulary of {len(ckpt.vocab):,} that differs from {cfg.data_path}'s "
            f"({poems.vocab_size:,}); evaluate it on the npz it was trained on"
        )
    setup_device(cfg.use_gpu, cfg.num_threads, quiet=True)
    model = ckpt.build_model()
    nats, count = heldout_loss(model, heldout_batches(poems), poems.pad_id, poems.start_id)
    step, epochs, held = ckpt.meta.get("global_step", "?"), ckpt.meta.get("epoch", "?"), int(poems.heldout.sum())
    print(f"checkpoint     {ckpt.path} (step {step}, epochs {epochs})")
    print(f"held out       {held:,} poems, {count:,} characters covered (every next character and <EOP>)")
    print(f"cross-entropy  {nats:.4f} nats/char, perplexity {math.exp(nats):.1f}")
    if args.samples > 0:
        poems_out = sample_poems(model, ckpt.vocab, args.samples, cfg.temperature, cfg.seed, cfg.max_gen_len)
        good = sum(well_formed(p) for p in poems_out)
        print(
            f"well formed    {good}/{len(poems_out)} sampled poems ({good / len(poems_out):.0%}), "
            f"temperature {cfg.temperature}, seed {cfg.seed}"
        )
        for text in poems_out:
            print(f"  {'+' if well_formed(text) else '-'} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
