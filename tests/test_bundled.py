"""The model shipped in the package: its record, its vocabulary, its held-out figure, and that it writes
like any checkpoint (forms, rhyme, tones, acrostics, templates, seeds)."""

from __future__ import annotations

import pytest

from tangpoem import prosody
from tangpoem.checkpoint import BUNDLED, load_checkpoint
from tangpoem.generation import Poet
from tests.test_generate import check_lines, check_rhyme, check_tones


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint("bundled")


@pytest.fixture(scope="module")
def poet() -> Poet:
    return Poet.load("bundled")


def test_the_bundled_model_carries_its_record(bundled):
    record = bundled.meta["bundled"]
    for key in ("recipe", "commit", "steps", "minutes", "machine", "corpus", "vocab_size", "heldout", "storage"):
        assert record.get(key) not in (None, "", {}), key
    assert record["vocab_size"] == len(bundled.vocab) == bundled.model_config.vocab_size
    assert record["recipe"]["max_steps"] == record["steps"]  # trained to the end of its schedule
    assert record["storage"] in ("int8", "float16")
    assert record["heldout"] - record["heldout_float32"] < 0.01  # what the compact storage may cost
    assert BUNDLED.stat().st_size <= 16 * 1024 * 1024
    # the weights come back as float32, the shape the metadata describes (checked by the loader)
    assert bundled.weights and all(w.dtype.name == "float32" for w in bundled.weights.values())


def test_its_vocabulary_is_a_fresh_builds(bundled, built_corpus):
    poems, _ = built_corpus
    assert bundled.vocab == poems.ix2word


@pytest.mark.slow
def test_its_heldout_cross_entropy_is_the_recorded_one(bundled, built_corpus):
    from tangpoem.evaluate import heldout_batches, heldout_loss

    poems, _ = built_corpus
    nats, _ = heldout_loss(bundled.build_model(), heldout_batches(poems), poems.pad_id, poems.start_id)
    assert nats == pytest.approx(bundled.meta["bundled"]["heldout"], abs=0.01)


@pytest.mark.parametrize("form", ["五绝", "七绝", "五律", "七律"])
def test_it_writes_every_form_with_rhyme_and_tones(poet, form):
    length, count = {"五绝": (5, 4), "七绝": (7, 4), "五律": (5, 8), "七律": (7, 8)}[form]
    poems = poet.write(form=form, tones=True, num_poems=6, seed=11)
    assert len(poems) == 6
    for poem in poems:
        check_lines(poem, length, count)
        check_tones(poem)
        check_rhyme(poem)


def test_acrostics_templates_and_seeds(poet):
    poems = poet.write(start_words="春花秋月", acrostic=True, form="七绝", num_poems=4, seed=5)
    assert all([line[0] for line in p.lines] == list("春花秋月") for p in poems)
    assert [p.text for p in poems] == [
        p.text for p in poet.write(start_words="春花秋月", acrostic=True, form="七绝", num_poems=4, seed=5)
    ]
    assert len({p.text for p in poems}) == 4
    (filled,) = poet.write(template="床前明月光，□□□□□。□□□□□，□□□□□。", tones=True, seed=2)
    assert filled.text.startswith("床前明月光，") and prosody.check_poem(filled.text).all_ok
    (greedy,) = poet.write(start_words="床前明月光，", form="五绝", temperature=0)
    assert greedy.text == poet.write(start_words="床前明月光，", form="五绝", temperature=0, seed=9)[0].text
