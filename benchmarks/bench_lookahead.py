"""Does the line lead to its rhyme? The model's own probability of the rhymes it writes, at each lookahead weight.

    python benchmarks/bench_lookahead.py --npz work/tangsong.npz --per-form 100 --weights 0,1,2,3

A rhyme's place takes only characters of the poem's rhyme group, and a left-to-right writer does not see it
coming (generation/lookahead.py). This draws held-out Tang 七绝 and 五律 with distinct titles (as
blind_reading.py's --titles does) and has the model write one poem to each title, in the real poem's form with
the forms' defaults, at each `rhyme_lookahead` weight (the same seed per title at every weight). It prints, for
the real poems and for each weight, the mean log-probability per character the model (given the title,
unguided) gives:

  rhymes       the rhyme characters but the last (the ends of lines 2, 4, 6)
  last rhyme   the poem's last character
  before       the characters just before a rhyme
  the rest     every other character

and the share of poems that repeat a character (tangpoem.evaluate.repeated_characters), the decoding time per
poem in one batch of all the titles, and per poem written one at a time (the command line's case; the first 20).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blind_reading import FORMS, add_titled_args, load_titled, write_each_title  # noqa: E402


def place_nats(poet, titles: list[str], texts: list[str]) -> list[float]:
    """Mean log-probability per character of the rhymes, the last rhyme, the characters before a rhyme, the rest."""
    places: list[list[float]] = [[], [], [], []]
    for title, text in zip(titles, texts, strict=True):
        nats = poet.log_probs(text, title=title)
        for i, ch in enumerate(text):
            if ch in "，。":
                continue
            if text[i + 1 : i + 2] == "。":
                places[1 if i == len(text) - 2 else 0].append(nats[i])
            elif text[i + 2 : i + 3] == "。":
                places[2].append(nats[i])
            else:
                places[3].append(nats[i])
    return [float(np.mean(p)) for p in places]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_titled_args(parser)
    parser.add_argument("--weights", default="0,1,2,3", help="rhyme_lookahead weights, comma-separated")
    args = parser.parse_args()

    from tangpoem.evaluate import repeated_characters

    _, poet, forms, titles, reals = load_titled(args)
    print(f"model {args.model_path}; {len(titles)} held-out Tang titles ({args.per_form} per form: {', '.join(FORMS)})")
    print("| poems | rhymes | last rhyme | before | the rest | repeats | ms/poem batched | ms/poem alone |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    nats = " | ".join(f"{x:.2f}" for x in place_nats(poet, titles, reals))
    print(f"| real | {nats} | {np.mean([repeated_characters(t) > 0 for t in reals]):.2f} | | |")
    for weight in [float(w) for w in args.weights.split(",")]:
        texts, requests, batched = write_each_title(poet, forms, titles, args.seed, rhyme_lookahead=weight)
        start = time.perf_counter()
        for request in requests[:20]:
            poet.write(request)
        alone = 1000 * (time.perf_counter() - start) / len(requests[:20])
        nats = " | ".join(f"{x:.2f}" for x in place_nats(poet, titles, texts))
        repeats = np.mean([repeated_characters(t) > 0 for t in texts])
        print(f"| weight {weight:g} | {nats} | {repeats:.2f} | {batched:.0f} | {alone:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
