"""Looking one character ahead of a rhyme (generation/lookahead.py): the network's peek leaves every row as it
was, the rules name the place before a rhyme, and with the lookahead the shipped model's rhymes are characters it
finds likely, as the poets' are, with every rule and every batch-equals-alone promise kept."""

from __future__ import annotations

import numpy as np
import pytest

from tangpoem.generation import GenerationConfig, Poet
from tangpoem.generation.guidance import GuidedStep
from tangpoem.generation.steps import make_step
from tests.test_generate import check_lines, check_rhyme, check_tones, random_ckpt  # noqa: F401 (a fixture)

TITLES = ["春夜喜雨", "秋夜寄远", "送友人", "登高", "山中", "夜泊"]


@pytest.fixture(scope="module")
def bundled() -> Poet:
    return Poet.load("bundled")


@pytest.mark.parametrize("backend", ["numpy", "eager"])
def test_peek_is_the_next_step_and_leaves_every_row_as_it_was(random_ckpt, backend):  # noqa: F811
    from tangpoem.checkpoint import load_checkpoint

    step = make_step(load_checkpoint(random_ckpt), backend)
    step.reset(3)
    for token in (5, 9, 2):  # three rows with different pasts
        step.step(np.array([token, token + 1, token + 2]), [])
    h, c = step.get_state()
    peeked = step.peek(np.array([2, 0, 2]), np.array([7, 8, 9]))
    assert all(np.array_equal(a, b) for a, b in zip(step.get_state(), (h, c), strict=True))
    stepped = step.step(np.array([8, 11, 7]), [0, 1, 2])  # row 0 takes 8, row 2 takes 7: as the peek's rows 1 and 0
    np.testing.assert_allclose(peeked[[1, 0]], stepped[[0, 2]], rtol=1e-5, atol=1e-5)
    assert not np.allclose(peeked[0], peeked[2], atol=1e-4)  # the two copies of row 2 read different characters


def test_a_guided_peek_keeps_each_rows_scale(random_ckpt):  # noqa: F811
    from tangpoem.checkpoint import load_checkpoint

    step = make_step(load_checkpoint(random_ckpt))
    step.reset(2)
    step.step(np.array([3, 3]), [])
    titled = step.get_state()
    step.reset(2)
    step.step(np.array([4, 4]), [])
    guided = GuidedStep(step, np.array([1.0, 3.0]), titled, step.get_state())
    before = guided.get_state()
    peeked = guided.peek(np.array([1, 0]), np.array([6, 6]))
    assert all(np.array_equal(a, b) for a, b in zip(guided.get_state(), before, strict=True))
    stepped = guided.step(np.array([6, 6]), [0, 1])
    np.testing.assert_allclose(peeked, stepped[[1, 0]], rtol=1e-5, atol=1e-5)


def test_the_rules_name_the_place_before_a_rhyme(bundled):
    job = bundled.job(GenerationConfig(form="五绝", seed=1))
    rules, (poem,) = job.rules, bundled.write(form="五绝", seed=1)
    st, ahead = rules.new_state(), {}
    for ch in poem.text:
        places = rules.rhyme_ahead(st)
        if places is not None:
            ahead[(st.lines_done, st.line_len)] = places
        token = bundled.classes.word2ix[ch]
        if places is not None:  # one character on, the rules allow at the rhyme's place exactly these
            after = st.copy()
            rules.advance(after, token)
            assert np.array_equal(np.setdiff1d(rules.next(after), after.rhymes_used), places)
        rules.advance(st, token)
    assert sorted(ahead) == [(1, 3), (3, 3)]  # the 4th character of lines 2 and 4, nowhere else
    second_rhyme = bundled.classes.word2ix[poem.lines[1][-2]]
    assert second_rhyme in ahead[(1, 3)] and second_rhyme not in ahead[(3, 3)]  # no rhyme twice (重韵)


def test_with_the_lookahead_the_rhymes_are_likely_characters(bundled):
    """The shipped model's own log-probability of the rhyme characters it writes, per rhyme, to six titles."""

    def rhyme_nats(**lookahead: float) -> float:
        requests = [GenerationConfig(title=t, form=f, seed=3, num_poems=2, **lookahead)
                    for t in TITLES for f in ("七绝", "五律")]  # fmt: skip
        found = []
        for request, poems in zip(requests, bundled.write_batch(requests), strict=True):
            for poem in poems:
                nats = bundled.log_probs(poem.text, title=request.title)
                found += [nats[i] for i, ch in enumerate(poem.text) if i >= 2 and poem.text[i + 1 : i + 2] == "。"]
        assert len(found) >= 24 * 2
        return float(np.mean(found))

    plain, ahead = rhyme_nats(rhyme_lookahead=0), rhyme_nats()  # the default looks ahead
    assert ahead > plain + 0.5, (plain, ahead)


@pytest.mark.parametrize("form", ["五绝", "七律"])
def test_the_lookahead_keeps_every_rule_and_batches_equal_one_by_one(random_ckpt, form):  # noqa: F811
    poet = Poet.load(random_ckpt)
    options = dict(form=form, tones=True, rhyme_lookahead=1.0, drafts=2)
    batch = poet.write(num_poems=4, seed=50, **options)
    alone = [poet.write(num_poems=1, seed=50 + i, **options)[0] for i in range(4)]
    assert [p.text for p in batch] == [p.text for p in alone]
    for poem in batch:
        check_lines(poem, int(form[0] == "七") * 2 + 5, 4 if form.endswith("绝") else 8)
        check_tones(poem)
        check_rhyme(poem)


def test_titled_requests_with_and_without_it_batch_as_they_write_alone(bundled):
    requests = [GenerationConfig(title=t, form="七绝", seed=i, rhyme_lookahead=i % 2) for i, t in enumerate(TITLES)]
    together = bundled.write_batch(requests)
    assert [p.text for got in together for p in got] == [bundled.write(r)[0].text for r in requests]
