"""Does a poem keep to its title, and what does title guidance cost? Figures that need no reader.

    python benchmarks/bench_title_guidance.py --npz work/tangsong.npz --per-form 100 --scales 1,1.5,2,3

Draws held-out Tang 七绝 and 五律 with distinct titles (as blind_reading.py's --titles does), and has the model
write one poem to each title, in the real poem's form with the forms' defaults, at each guidance scale (the
same seed per title at every scale, so the rows differ by the scale alone). For each scale it prints:

  own-poem rank  where the real poem under the same title ranks among all the drawn real poems by the
                 generated poem's character TF-IDF cosine (IDF from the held-out Tang poems): top-1 and top-10
                 shares and the mean reciprocal rank; by chance top-1 is 1/N. It measures the topic by words,
                 not by the model's own probabilities, so it cannot be gamed by the guidance it measures.
  title chars    share of poems using at least one of its title's characters (the real poems: the reference)
  repeats        share of poems with a character three or more times (guidance that is too strong loops)
  plain nats     the mean log-probability per character the model, unguided and given the title, gives the
                 poem written: how far guidance moves the text from what the model finds natural
  ms/poem        decoding time per poem (one batch of all the titles)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blind_reading import FORMS, add_titled_args, load_titled, write_each_title  # noqa: E402

PUNCTUATION = "，。？！；：、"


def tfidf(texts: list[str], idf: dict[str, float]) -> np.ndarray:
    """Unit rows of character TF-IDF over the idf's characters (punctuation has none)."""
    index = {ch: i for i, ch in enumerate(idf)}
    out = np.zeros((len(texts), len(index)))
    for r, text in enumerate(texts):
        for ch, n in Counter(text).items():
            if ch in index:
                out[r, index[ch]] = n * idf[ch]
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def heldout_idf(poems) -> dict[str, float]:
    """Each character's inverse document frequency over the held-out Tang poems (punctuation has none)."""
    tang = poems.collection_names.index("tang")
    held = [poems.decode(poems.data[r]) for r in (poems.heldout & (poems.collection_of_rows() == tang)).nonzero()[0]]
    df = Counter(ch for text in held for ch in set(text) if ch not in PUNCTUATION)
    return {ch: math.log(len(held) / n) for ch, n in df.items()}


def own_poem_ranks(texts: list[str], idf: dict[str, float], real_vecs: np.ndarray) -> np.ndarray:
    """Where the real poem under each text's title ranks among all the drawn real poems (tfidf rows real_vecs,
    in the texts' order) by character TF-IDF cosine with the text: 1 is its own poem first."""
    sims = tfidf(texts, idf) @ real_vecs.T  # [generated, real]
    return 1 + (sims > sims.diagonal()[:, None]).sum(axis=1)


def uses_title(titles: list[str], texts: list[str]) -> float:
    """The share of texts using at least one character of their title."""
    return float(np.mean([any(ch in text for ch in title) for title, text in zip(titles, texts, strict=True)]))


def thrice(texts: list[str]) -> float:
    """The share of texts with a character written three times or more."""
    return float(np.mean([max(Counter(c for c in t if c not in PUNCTUATION).values()) >= 3 for t in texts]))


def plain_nats(poet, titles: list[str], texts: list[str]) -> float:
    """Mean log-probability per character of each text under the unguided model given its title."""
    scores = [poet.log_probs(text, title=title) for title, text in zip(titles, texts, strict=True)]
    return float(np.concatenate(scores).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_titled_args(parser)
    parser.add_argument("--scales", default="1,1.5,2,3", help="guidance scales, comma-separated")
    args = parser.parse_args()

    poems, poet, forms, titles, reals = load_titled(args)
    idf = heldout_idf(poems)
    real_vecs = tfidf(reals, idf)
    n = len(titles)
    print(f"model {args.model_path}; {n} held-out Tang titles ({args.per_form} per form: {', '.join(FORMS)}); "
          f"chance top-1 {1 / n:.3f}")  # fmt: skip
    print(f"real poems: title chars {uses_title(titles, reals):.2f}")
    print("| scale | top-1 | top-10 | MRR | title chars | repeats | plain nats | ms/poem |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for scale in [float(s) for s in args.scales.split(",")]:
        texts, _, ms = write_each_title(poet, forms, titles, args.seed, title_guidance=scale)
        ranks = own_poem_ranks(texts, idf, real_vecs)
        nats = plain_nats(poet, titles, texts)
        print(f"| {scale:g} | {np.mean(ranks == 1):.3f} | {np.mean(ranks <= 10):.3f} | {np.mean(1 / ranks):.3f} | "
              f"{uses_title(titles, texts):.2f} | {thrice(texts):.2f} | {nats:.3f} | {ms:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
