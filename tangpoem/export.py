"""Export the generator's step (one token per poem in, logits and the new (h, c) out) for Paddle Inference.

    python -m tangpoem.export --model-path CKPT --out work/export/step
    python -m tangpoem.generate --model-path CKPT --inference work/export/step

writes `PATH.json` + `PATH.pdiparams` (Paddle 3.x; `PATH.pdmodel` with Paddle 2.x) by
`paddle.jit.save`, and `PATH.meta.json` naming the model's shape and a hash of its vocabulary: the
exported files hold no vocabulary, so the generator (`generate.InferenceStep`) still reads it from
the checkpoint and refuses a checkpoint whose vocabulary is not the one the step was exported with.
The files are saved in a temporary folder beside PATH and renamed into place, the meta file last: an
export cut short leaves no meta, and the generator refuses a step without one.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tangpoem.checkpoint import Checkpoint, load_checkpoint, resolve_model
from tangpoem.config import COMMANDS, ArgumentParser, add_config_args, parse_config_args
from tangpoem.data import atomic_write
from tangpoem.errors import TangpoemError, cli_main

EXPORT_FORMAT = "tangpoem-step"  # PATH.meta.json of `tangpoem.export`


def vocab_hash(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def exported_files(path: str) -> tuple[str, str] | None:
    """The program and parameters `paddle.jit.save` wrote at PATH (3.x: .json, 2.x: .pdmodel)."""
    for program in (path + ".json", path + ".pdmodel"):
        if os.path.isfile(program) and os.path.isfile(path + ".pdiparams"):
            return program, path + ".pdiparams"
    return None


def file_record(path: str) -> dict[str, Any]:
    """Size and sha256 of an exported file, as the export's meta file records them."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def export_step(ckpt: Checkpoint, out: str) -> list[str]:
    """paddle.jit.save the step (ids [B, 1], h, c) -> (logits [B, V], h, c); returns the files written."""
    import paddle
    from paddle import nn
    from paddle.static import InputSpec

    model = ckpt.build_model()
    cfg = ckpt.model_config

    class StepLayer(nn.Layer):
        # Flat inputs and outputs: Paddle Inference feeds and fetches tensors by name, not tuples.
        def __init__(self, model: nn.Layer):
            super().__init__()
            self.model = model

        def forward(self, ids, h, c):
            logits, (h2, c2) = self.model(ids, (h, c))
            return logits, h2, c2

    layer = StepLayer(model)
    layer.eval()
    state = [cfg.num_layers, None, cfg.hidden_dim]
    spec = [InputSpec([None, 1], "int64", "ids"), InputSpec(state, "float32", "h"), InputSpec(state, "float32", "c")]
    folder = Path(out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{Path(out).name}.", dir=folder)
    except OSError as err:
        raise TangpoemError(
            f"cannot write the export to {folder}: {err.strerror or err}; choose another --out"
        ) from None
    try:
        static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
        paddle.jit.save(static, os.path.join(tmp, "step"), input_spec=spec)
        files = exported_files(os.path.join(tmp, "step"))
        if files is None:
            raise TangpoemError(f"paddle.jit.save did not write {out}.json/.pdmodel and {out}.pdiparams")
        # The meta file goes first and comes back last: a step is only used with its meta, so an export
        # interrupted halfway is refused ("export the step again"), never run with another's weights.
        Path(out + ".meta.json").unlink(missing_ok=True)
        for stale in (".json", ".pdmodel"):  # a program of the other Paddle version must not stay beside
            Path(out + stale).unlink(missing_ok=True)
        written = []
        for path in files:
            final = out + Path(path).suffix
            os.replace(path, final)
            written.append(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {
        "format": EXPORT_FORMAT,
        "model": cfg.to_dict(),
        "vocab_sha256": vocab_hash(ckpt.vocab),
        "checkpoint": os.path.abspath(ckpt.path),
        "files": {Path(path).suffix: file_record(path) for path in written},  # checked before a predictor loads them
    }
    atomic_write(out + ".meta.json", lambda f: f.write(json.dumps(meta, ensure_ascii=False, indent=1).encode()))
    return [*written, out + ".meta.json"]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m tangpoem.export", description=__doc__.split("\n\n")[0])
    add_config_args(parser, COMMANDS["tangpoem.export"])
    parser.add_argument("--out", default="work/export/step", help="path prefix to write (default: %(default)s)")
    cfg, args = parse_config_args(parser, argv)
    ckpt = load_checkpoint(resolve_model(cfg, named="model_path" in vars(args)))
    from tangpoem.device import setup_device

    setup_device(False, cfg.num_threads)
    for path in export_step(ckpt, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
