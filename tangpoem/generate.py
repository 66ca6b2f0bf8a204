"""Write poems from a checkpoint: continuation, acrostic, templates and fixed forms (the command line of
`tangpoem.generation`, where the decoding loop, the rules and `Poet` live).

    python -m tangpoem.generate --start-words 老夫聊发少年狂,
    python -m tangpoem.generate --acrostic --start-words 夜月一帘幽梦春风十里柔情
    python -m tangpoem.generate --template "床前明月光，□□□□□。□□□□□，□□□□□。"
    python -m tangpoem.generate --form 七绝 --tones --candidates 4 --num-poems 4 --seed 7 --json

The settings are `GenerationConfig`'s, by the same names as the Python API's keyword arguments and the
JSON API's fields. Without --model-path the checkpoint is `checkpoint.resolve_model`'s choice: the
configured one, your newest, else the bundled model. `--json` prints each poem as the JSON API answers
it (text, lines, couplets, seed, ended, score, rhyme, pattern) with the settings that wrote it.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import json
import sys

from tangpoem.checkpoint import resolve_model
from tangpoem.config import COMMANDS, ArgumentParser, Config, add_config_args, parse_config_args
from tangpoem.errors import cli_main
from tangpoem.generation import BACKENDS, GenerationConfig, Poet, resolve_shape

SETTINGS = COMMANDS["tangpoem.generate"]
DEFAULTS = {"num_threads": 1}  # see generation.steps.make_step: one BLAS thread is never slow, two can be


def tutorial_words(cfg: Config, given: set[str]) -> None:
    """The command line's start and prefix words, when not given: the tutorial's (Config's defaults). Its start
    words are a 7-character line, so they open only a continuation of 7-character lines; otherwise the model
    begins (or, for an acrostic, the heads are asked for). A title or keywords set the subject: then neither is fed."""
    titled = bool(cfg.title.strip() or cfg.keywords.strip())
    if "prefix_words" not in given and titled:
        cfg.prefix_words = ""
    if "start_words" in given or cfg.template:
        cfg.start_words = cfg.start_words if "start_words" in given else ""
        return
    length = resolve_shape(cfg.form, cfg.line_length, cfg.lines).line_length
    if cfg.acrostic or titled or length not in (None, 7):
        cfg.start_words = ""


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m tangpoem.generate", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    add_config_args(parser, SETTINGS, DEFAULTS)
    parser.add_argument("--json", action="store_true", help="one JSON object per poem, with the API's keys")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="how to run the network (default: numpy)")
    parser.add_argument("--inference", metavar="PATH", default="", help="run PATH from `tangpoem.export` instead")
    cfg, args = parse_config_args(parser, argv)
    given = {name for name in ("start_words", "prefix_words")
             if name in vars(args) or getattr(cfg, name) != getattr(Config, name)}  # fmt: skip
    tutorial_words(cfg, given)
    request = GenerationConfig.from_config(cfg)
    request.check()
    model = resolve_model(cfg, named="model_path" in vars(args))
    poet = Poet.load(model, backend=args.backend, inference=args.inference, num_threads=cfg.num_threads)
    poems = poet.write(request)
    settings = {**request.to_dict(), "model_path": model, "backend": poet.backend}
    for i, poem in enumerate(poems):
        if args.json:
            # "poem": the text under its earlier key, kept for one release (tangpoem 0.2 drops it)
            print(json.dumps({**poem.to_dict(), "poem": poem.text, "settings": settings}, ensure_ascii=False))
        else:
            if i:
                print()
            print(poem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
