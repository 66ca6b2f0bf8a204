"""What the rules and the choosing buy, and what they cost: poems of one checkpoint under several settings.

    python benchmarks/bench_choosing.py --model-path bundled --poems 24

For each setting, `--poems` poems in each of 七绝 and 五律 (from <START>, no prefix words, seeds 0..n-1):
- mean log-probability per character the model gives the whole poem (higher: the model finds it more
  natural; sampling at temperature 0.8 with top-p 0.9), and the rhyme characters' own (the last
  character of the even lines, the hardest choice a left-to-right writer makes);
- 平水韵 rhyme share, every-rule share (rhyme and a standard tone pattern), distinct-2;
- milliseconds per poem at batch 1 on one thread (CPU time: it does not depend on other load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {  # name: generation.GenerationConfig fields
    "form only (--no-rhyme)": {"rhyme": False},
    "rhyme (forms' default)": {},
    "rhyme, --drafts 4": {"drafts": 4},
    "rhyme, --candidates 4": {"candidates": 4},
    "rhyme + tones": {"tones": True},
    "rhyme + tones, --drafts 4": {"tones": True, "drafts": 4},
    "rhyme + tones, --candidates 4": {"tones": True, "candidates": 4},
    "rhyme + tones, --candidates 4 --drafts 4": {"tones": True, "candidates": 4, "drafts": 4},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="bundled")
    parser.add_argument("--poems", type=int, default=24, help="poems per form and setting")
    parser.add_argument("--only", nargs="*", help="names of SETTINGS to run (default: all)")
    args = parser.parse_args()

    import os

    from tangpoem.generation import Poet
    from tangpoem.prosody import check_poem

    poet = Poet.load(args.model_path)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model {args.model_path} "
          f"({poet.ckpt.model_config.to_dict()}); load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{args.poems} poems per form (七绝, 五律) and setting, temperature 0.8, top-p 0.9, batch 1, one thread")
    head = f"{'setting':44} {'logp/char':>9} {'rhyme logp':>10} {'rhyme':>6} {'rules':>6} {'dist-2':>6} {'ms/poem':>8}"
    print(head)
    for name, extra in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        texts, cpu = [], 0.0
        for form in ("七绝", "五律"):
            for seed in range(args.poems):
                start = time.process_time()
                (poem,) = poet.write(form=form, seed=seed, **extra)
                cpu += time.process_time() - start
                texts.append(poem.text)
        logps, rhyme_logps = [], []
        for text in texts:
            lp = poet.log_probs(text)
            logps.append(float(lp.mean()))
            ends = [i for i, ch in enumerate(text) if ch in "。"]  # even lines end before their 。
            rhyme_logps += [float(lp[i - 1]) for i in ends]
        checks = [check_poem(t) for t in texts]
        bigrams = [line[i : i + 2] for t in texts for line in t.replace("。", "，").split("，") if line
                   for i in range(len(line) - 1)]  # fmt: skip
        cells = (
            f"{statistics.mean(logps):9.3f} {statistics.mean(rhyme_logps):10.3f} "
            f"{statistics.mean(c.rhyme for c in checks):6.0%} {statistics.mean(c.all_ok for c in checks):6.0%} "
            f"{len(set(bigrams)) / len(bigrams):6.3f} {cpu / len(texts) * 1000:8.1f}"
        )
        print(f"{name:44} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
