"""Export the generator's step (one token per poem in, logits and the new (h, c) out) for Paddle Inference.

    python -m tangpoem.export --model-path CKPT --out work/export/step
    python -m tangpoem.generate --model-path CKPT --inference work/export/step

writes `PATH.json` + `PATH.pdiparams` (Paddle 3.x; `PATH.pdmodel` with Paddle 2.x) by
`paddle.jit.save`, and `PATH.meta.json` naming the model's shape and a hash of its vocabulary: the
exported files hold no vocabulary, so the generator still reads it from the checkpoint and refuses
a checkpoint whose vocabulary is not the one the step was exported with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from tangpoem.checkpoint import Checkpoint, load_checkpoint
from tangpoem.config import add_config_args, config_from_args
from tangpoem.data import atomic_write
from tangpoem.device import usable_cpus
from tangpoem.errors import TangpoemError, cli_main

META_FORMAT = "tangpoem-step"


def vocab_hash(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def _model_files(path: str) -> tuple[str, str] | None:
    for program in (path + ".json", path + ".pdmodel"):
        if os.path.isfile(program) and os.path.isfile(path + ".pdiparams"):
            return program, path + ".pdiparams"
    return None


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
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, out, input_spec=spec)
    meta = {
        "format": META_FORMAT,
        "model": cfg.to_dict(),
        "vocab_sha256": vocab_hash(ckpt.vocab),
        "checkpoint": os.path.abspath(ckpt.path),
    }
    atomic_write(out + ".meta.json", lambda f: f.write(json.dumps(meta, ensure_ascii=False, indent=1).encode()))
    files = _model_files(out)
    if files is None:
        raise TangpoemError(f"paddle.jit.save did not write {out}.json/.pdmodel and {out}.pdiparams")
    return [*files, out + ".meta.json"]


class InferenceStep:
    """The exported step run by a Paddle Inference predictor, (h, c) kept in numpy between calls."""

    def __init__(self, path: str, ckpt: Checkpoint, num_threads: int = 0, ir_optim: bool = True, onednn: bool = False):
        import paddle.inference as pi

        files = _model_files(path)
        if files is None:
            raise TangpoemError(
                f"no exported step at {path} ({path}.json or .pdmodel, and .pdiparams); "
                f"write one with `python -m tangpoem.export --model-path CKPT --out {path}`"
            )
        try:
            meta = json.loads(Path(path + ".meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("format") != META_FORMAT:
            raise TangpoemError(f"{path}.meta.json is missing or not a tangpoem export; export the step again")
        if meta.get("vocab_sha256") != vocab_hash(ckpt.vocab) or meta.get("model") != ckpt.model_config.to_dict():
            raise TangpoemError(
                f"the step at {path} was exported from {meta.get('checkpoint', 'another checkpoint')}, "
                f"whose model or vocabulary differs from {ckpt.path}; export this checkpoint or pass that one"
            )
        config = pi.Config(*files)
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(num_threads if num_threads > 0 else usable_cpus())
        config.switch_ir_optim(ir_optim)
        if onednn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        names = self.predictor.get_input_names()
        self.inputs = {n: self.predictor.get_input_handle(n) for n in names}
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]
        self.shape = (ckpt.model_config.num_layers, ckpt.model_config.hidden_dim)
        self.reset(1)

    def reset(self, batch: int) -> None:
        layers, hidden = self.shape
        self.h = np.zeros((layers, batch, hidden), np.float32)
        self.c = np.zeros((layers, batch, hidden), np.float32)

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None:
        self.inputs["ids"].copy_from_cpu(np.ascontiguousarray(ids.reshape(-1, 1), dtype=np.int64))
        self.inputs["h"].copy_from_cpu(self.h)
        self.inputs["c"].copy_from_cpu(self.c)
        self.predictor.run()
        logits_h, h_h, c_h = self.outputs
        self.h = h_h.copy_to_cpu()
        self.c = c_h.copy_to_cpu()
        if not rows:
            return None
        out = logits_h.copy_to_cpu()
        return out if len(rows) == len(out) else out[rows]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tangpoem.export", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--out", default="work/export/step", help="path prefix to write (default: %(default)s)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    ckpt = load_checkpoint(cfg.model_path)
    from tangpoem.device import setup_device

    setup_device(False, cfg.num_threads)
    for path in export_step(ckpt, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
