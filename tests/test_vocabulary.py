"""One request vocabulary and one choice of model: the command line, the Python API and the JSON API name
the same settings the same way, answer with the same keys and write the same poems; every command and
`Poet.load` pick the same checkpoint for the same settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tangpoem.config import make_config
from tangpoem.generation import GenerationConfig, Poet

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tangpoem.serve import ServeSettings, create_app  # noqa: E402


def test_one_request_writes_the_same_poems_through_cli_python_and_http(trained_ckpt, capsys):
    from tangpoem.generate import main

    settings = {"start_words": "春", "form": "五绝", "seed": 7, "num_poems": 3, "prefix_words": "", "top_k": 40}
    python = [p.to_dict() for p in Poet.load(trained_ckpt).write(**settings)]
    assert len(python) == 3 and all(p["text"].startswith("春") for p in python)

    argv = ["--model-path", trained_ckpt, "--json"]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [{k: v for k, v in r.items() if k not in ("settings", "poem")} for r in records] == python

    with TestClient(create_app(ServeSettings(model_path=trained_ckpt))) as client:
        answer = client.post("/api/poems", json=settings).json()
    assert answer["poems"] == python
    # the settings come back under the same names, with the same values, both ways
    shared = set(GenerationConfig().to_dict())
    assert set(answer["settings"]) == shared and shared <= set(records[0]["settings"])
    assert {k: records[0]["settings"][k] for k in shared} == answer["settings"]


def test_every_command_and_poet_pick_the_same_model(trained_ckpt, tang_npz, tmp_path, monkeypatch, capsys):
    """A user's folder with a config naming a model_path that is not there yet: each command falls back to
    the newest checkpoint of the config's model_prefix, the same one."""
    from tangpoem.evaluate import main as evaluate
    from tangpoem.export import main as export
    from tangpoem.generate import main as generate

    folder = tmp_path / "work" / "checkpoints"
    folder.mkdir(parents=True)
    mine = folder / "mine.step20"
    shutil.copy(trained_ckpt, mine)
    shutil.copy(trained_ckpt + ".trainer", str(mine) + ".trainer")
    config = tmp_path / "mine.toml"
    config.write_text(
        f'model_path = "{folder / "mine.30"}"\nmodel_prefix = "{folder / "mine"}"\ndata_path = "{tang_npz}"\n'
        'prefix_words = ""\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    expected = str(mine)

    assert generate(["-c", str(config), "--json", "--start-words", ""]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["settings"]["model_path"] == expected
    assert evaluate(["-c", str(config), "--json", "--samples", "0", "--per-form", "0", "--no-use-gpu"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == expected
    assert export(["-c", str(config), "--out", str(tmp_path / "export" / "step")]) == 0
    meta = json.loads((tmp_path / "export" / "step.meta.json").read_text(encoding="utf-8"))
    assert meta["checkpoint"] == str(Path(expected).resolve())
    assert Poet.load(config=make_config(config_file=str(config))).ckpt.path == expected
    # the server: its main resolves the same way before it starts uvicorn
    import uvicorn

    from tangpoem.serve import main as serve

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app))
    assert serve(["-c", str(config), "--port", "0"]) == 0
    with TestClient(started["app"]) as client:
        assert client.get("/api/health").json()["model"]["name"] == mine.name
