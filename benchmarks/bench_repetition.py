"""How often a poem repeats a character, real against generated, at each repetition penalty.

    python benchmarks/bench_repetition.py --npz work/tangsong.npz --per-form 100 --penalties 0,1,2,3,4

Regulated verse avoids writing a character twice in a poem (重字), except a doubled word such as 萧萧 or
a deliberate echo; readers of the blind readings kept noting repeated characters in the model's poems.
This draws held-out Tang 七绝 and 五律 with distinct titles (as blind_reading.py's --titles does) and has
the model write one poem to each title, in the real poem's form with the forms' defaults, at each
repetition penalty (the same seed per title at every penalty, so the rows differ by the penalty alone).
It prints, for the real poems and for each penalty:

  repeats      share of poems with a repeated character, a doubled word (two in a row, once) not counted
               (tangpoem.evaluate.repeated_characters)
  per poem     repeated characters per poem, counted the same way
  3+           share of poems with a character three or more times
  title chars  share of poems using at least one of its title's characters
  MRR          mean reciprocal rank of the real poem under the same title among all the drawn real
               poems, by character TF-IDF cosine with the poem written (bench_title_guidance.py): does
               the poem stay on its subject
  plain nats   the mean log-probability per character the model, given the title and unguided, gives
               the poem written: how far the penalty moves the text from what the model finds natural
  ms/poem      decoding time per poem (one batch of all the titles)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_title_guidance import heldout_idf, own_poem_ranks, plain_nats, tfidf, thrice, uses_title  # noqa: E402
from blind_reading import FORMS, add_titled_args, load_titled, write_each_title  # noqa: E402


def figures(texts: list[str], titles: list[str]) -> str:
    """The table's text columns for these poems: repeats, per poem, 3+, title chars."""
    from tangpoem.evaluate import repeated_characters

    counts = [repeated_characters(t) for t in texts]
    shares = [np.mean([n > 0 for n in counts]), np.mean(counts), thrice(texts), uses_title(titles, texts)]
    return " | ".join(f"{x:.2f}" for x in shares)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_titled_args(parser)
    parser.add_argument("--penalties", default="0,1,2,3,4", help="repetition penalties in nats, comma-separated")
    args = parser.parse_args()

    poems, poet, forms, titles, reals = load_titled(args)
    idf = heldout_idf(poems)
    real_vecs = tfidf(reals, idf)
    print(f"model {args.model_path}; {len(titles)} held-out Tang titles ({args.per_form} per form: {', '.join(FORMS)})")
    print("| poems | repeats | per poem | 3+ | title chars | MRR | plain nats | ms/poem |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| real | {figures(reals, titles)} | 1 | {plain_nats(poet, titles, reals):.3f} | |")
    for penalty in [float(p) for p in args.penalties.split(",")]:
        texts, _, ms = write_each_title(poet, forms, titles, args.seed, repetition_penalty=penalty)
        ranks = own_poem_ranks(texts, idf, real_vecs)
        nats = plain_nats(poet, titles, texts)
        print(f"| penalty {penalty:g} | {figures(texts, titles)} | {np.mean(1 / ranks):.3f} | {nats:.3f} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
