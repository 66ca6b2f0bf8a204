"""The one decoding loop (`decode`): every poem of every request in one batch, one network step per
character for all of them, each poem under its request's rules and sampler settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tangpoem.generation.guidance import GuidedStep
from tangpoem.generation.lookahead import look_ahead
from tangpoem.generation.request import GenerationConfig
from tangpoem.generation.rules import PoemState, Rules
from tangpoem.generation.sampling import log_probs, sample
from tangpoem.generation.steps import Step


class _Scores:
    """Per-row sums of log-probabilities: the whole poem's, and the current couplet's (for drafts)."""

    def __init__(self, n: int):
        self.total, self.count = np.zeros(n), np.zeros(n, np.int64)
        self.part, self.part_count = np.zeros(n), np.zeros(n, np.int64)

    def add(self, rows: list[int], logp: np.ndarray) -> None:
        self.total[rows] += logp
        self.count[rows] += 1
        self.part[rows] += logp
        self.part_count[rows] += 1

    def mean(self, rows, part: bool = False) -> np.ndarray:
        s, n = (self.part, self.part_count) if part else (self.total, self.count)
        return s[rows] / np.maximum(n[rows], 1)

    def copy_row(self, dst: int, src: int) -> None:
        for a in (self.total, self.count, self.part, self.part_count):
            a[dst] = a[src]


class Constraint(Protocol):
    """A piece plugged into the loop beside the rules: before each sampled character it narrows the ids
    the rules allow (sorted ids in, a sorted subset out; keep at least one) for the poem of that seed. A new
    kind of request that restricts what is written (keywords.py: words that must appear; characters to
    avoid) is one of these."""

    def allowed(self, state: PoemState, ids: np.ndarray, seed: int) -> np.ndarray: ...


class Preference(Protocol):
    """A piece plugged into the sampler: before each sampled character it names ids that gain `nats` on
    their logits (a keyword the line is due to write), for the poem of that seed; the model still chooses."""

    nats: float

    def favoured(self, state: PoemState, seed: int) -> list[int]: ...


@dataclass
class Job:
    """One request to the decoder: its rules, the tokens it primes with and is given, its poems' seeds."""

    rules: Rules
    prime: list[int]  # <START>, style, title, <SEP>, prefix words: fed first, outputs ignored
    given: list[int]  # start words: forced before the rules decide
    seeds: list[int]  # one poem per seed
    opts: GenerationConfig
    constraints: list[Constraint] = field(default_factory=list)
    preference: Preference | None = None
    untitled_prime: list[int] | None = None  # the prime without the title: guided toward it (title_guidance)

    def seed_of(self, row: int) -> int:
        """The seed of the poem a row of this job writes (row counted from the job's first)."""
        return self.seeds[row // (self.rows // len(self.seeds))]

    @property
    def guidance(self) -> float:
        """The guidance scale its rows decode with (1: none)."""
        return self.opts.title_guidance if self.untitled_prime is not None else 1.0

    @property
    def widths(self) -> tuple[int, int]:
        """(candidates, drafts) per poem; greedy decoding would write them all alike, so one of each."""
        return (self.opts.candidates, self.opts.drafts) if self.opts.temperature > 0 else (1, 1)

    @property
    def rows(self) -> int:
        k, r = self.widths
        return len(self.seeds) * k * r


def decode(step: Step, jobs: list[Job]) -> list[list[tuple[PoemState, float | None]]]:
    """Decode every poem of every job as one batch: one network step per character for all of them.

    Each job primes its rows (outputs ignored), forces its given tokens, then samples under its rules
    until every poem ends. A poem has K candidates of R drafts, one row each: row (p * K + k) * R + r
    of its job. The R drafts of a candidate start each couplet from the same state; when all have
    closed it (or ended), the likeliest couplet is copied to the others. At the end the likeliest of
    the K candidates is the poem. Returns, per job and poem, its state and mean log-probability per
    character (None when nothing was compared).
    """
    batch = _Batch(step, jobs)
    while not batch.done:
        actions = batch.next_actions()  # per row: a forced token, the ids it may sample, or None
        logits, rows = batch.step_network(actions)
        chosen = batch.choose(actions, logits, rows)
        batch.advance(actions, chosen)
        batch.keep_likeliest_drafts()
    return batch.results()


class _Batch:
    """The rows of one decode: each row's poem state, random stream, scores, and what it feeds next."""

    def __init__(self, step: Step, jobs: list[Job]):
        self.step, self.jobs = step, jobs
        self.job_of = np.concatenate([np.full(job.rows, j) for j, job in enumerate(jobs)])
        self.first_row = np.cumsum([0] + [job.rows for job in jobs])
        n = int(self.first_row[-1])
        self.states = [jobs[j].rules.new_state() for j in self.job_of]
        self.rngs = [
            np.random.default_rng(seed if k == r == 0 else [seed, k, r])
            for job in jobs
            for seed in job.seeds
            for k in range(job.widths[0])
            for r in range(job.widths[1])
        ]
        self.scoring = [job.widths != (1, 1) for job in jobs]  # only then is a log-probability needed
        self.drafts = [list(range(a, a + job.widths[1])) for job, f in zip(jobs, self.first_row, strict=False)
                       for a in range(int(f), int(f) + job.rows, job.widths[1]) if job.widths[1] > 1]  # fmt: skip
        self.scores = _Scores(n)
        self.waiting = np.zeros(n, dtype=bool)  # drafts that closed their couplet, held until the others have
        self.feed = _prime(step, [job.prime for job in jobs], self.first_row)
        scales = np.concatenate([np.full(job.rows, job.guidance) for job in jobs])
        # Guidance: every row gets an untitled twin (a job without guidance: its own prime, g = 1). The title
        # comes before <SEP>, so both primes end alike and the loop's first feed serves the twins too.
        if (scales != 1).any():
            titled = step.get_state()
            _prime(step, [job.untitled_prime or job.prime for job in jobs], self.first_row)
            self.step = GuidedStep(step, scales, titled, step.get_state())
        self.pad = jobs[0].rules.c.pad

    def seed_of(self, i: int) -> int:
        """The seed of the poem row i writes."""
        j = int(self.job_of[i])
        return self.jobs[j].seed_of(i - int(self.first_row[j]))

    @property
    def done(self) -> bool:
        return all(st.done for st in self.states)

    def next_actions(self) -> list[Any]:
        actions: list[Any] = []
        for i, st in enumerate(self.states):
            job = self.jobs[self.job_of[i]]
            if st.done or self.waiting[i]:
                actions.append(None)
            elif len(st.tokens) < len(job.given):
                actions.append(job.given[len(st.tokens)])
            else:
                action = job.rules.next(st)
                if isinstance(action, np.ndarray) and job.constraints:
                    seed = self.seed_of(i)
                    for constraint in job.constraints:
                        action = constraint.allowed(st, action, seed)
                actions.append(action)
        return actions

    def step_network(self, actions: list[Any]) -> tuple[np.ndarray | None, list[int]]:
        """Feed every row; logits only for rows that sample or whose forced token is scored (the output
        layer is most of a step). A waiting draft does not move: its state is put back."""
        rows = [i for i, a in enumerate(actions) if isinstance(a, np.ndarray) or (a is not None and self._scored(i))]
        held = self.step.get_state() if self.waiting.any() else None
        logits = self.step.step(self.feed, rows)
        if held is not None:
            h, c = self.step.get_state()
            h[:, self.waiting], c[:, self.waiting] = held[0][:, self.waiting], held[1][:, self.waiting]
            self.step.set_state(h, c)
        return logits, rows

    def _scored(self, i: int) -> bool:
        """Row i's next token counts in its poem's score (its job compares, and it is past the start words)."""
        job = self.jobs[self.job_of[i]]
        return self.scoring[self.job_of[i]] and len(self.states[i].tokens) >= len(job.given)

    def choose(self, actions: list[Any], logits: np.ndarray | None, rows: list[int]) -> dict[int, int]:
        """Each row's token: the forced one, or a draw with its job's sampler settings; scores updated."""
        chosen = {i: int(a) for i, a in enumerate(actions) if a is not None and not isinstance(a, np.ndarray)}
        at = {row: k for k, row in enumerate(rows)}
        for j, job in enumerate(self.jobs):
            mine = [i for i in rows if self.job_of[i] == j and isinstance(actions[i], np.ndarray)]
            if mine:
                o, states, pref = job.opts, self.states, job.preference
                allowed, x = [actions[i] for i in mine], logits[[at[i] for i in mine]]
                if o.rhyme_lookahead:
                    x = self._look_ahead(job, mine, allowed, x)
                favoured = [pref.favoured(states[i], self.seed_of(i)) for i in mine] if pref else None
                picks = sample(
                    x, allowed,
                    [job.rules.banned(states[i], o.repeat_guard) for i in mine], [self.rngs[i] for i in mine],
                    o.temperature, o.top_k, o.top_p, [states[i].tokens for i in mine], o.repetition_penalty,
                    favoured, pref.nats if pref else 0.0,
                )  # fmt: skip
                chosen.update(zip(mine, picks.tolist(), strict=True))
        scored = [i for i in rows if self._scored(i)]
        if scored:
            tokens = np.array([chosen[i] for i in scored])
            self.scores.add(scored, log_probs(logits[[at[i] for i in scored]], tokens))
        return chosen

    def _look_ahead(self, job: Job, mine: list[int], allowed: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        """The rows of `mine` about to write the character before a rhyme look one character ahead (lookahead.py):
        their allowed ids narrow to the candidates (in place) and their logits gain; the logits returned."""
        ahead = [(k, ids) for k, i in enumerate(mine) if (ids := job.rules.rhyme_ahead(self.states[i])) is not None]
        if not ahead:
            return x
        ks = [k for k, _ in ahead]
        tops, gained = look_ahead(self.step, [mine[k] for k in ks], [allowed[k] for k in ks], x[ks],
                                  [ids for _, ids in ahead], job.opts.rhyme_lookahead)  # fmt: skip
        x = x.astype(np.float64)
        x[ks] = gained
        for k, top in zip(ks, tops, strict=True):
            allowed[k] = top
        return x

    def advance(self, actions: list[Any], chosen: dict[int, int]) -> None:
        """Each row takes its token; a draft that closed its couplet waits for the others."""
        for i, st in enumerate(self.states):
            if actions[i] is None:
                if st.done:
                    self.feed[i] = self.pad
                continue
            job = self.jobs[self.job_of[i]]
            lines_before = st.lines_done
            job.rules.advance(st, chosen[i])
            self.feed[i] = self.pad if st.done else chosen[i]  # <EOP> is never fed back as text
            couplet_closed = st.lines_done > lines_before and st.lines_done % 2 == 0
            if couplet_closed and not st.done and job.widths[1] > 1:
                self.waiting[i] = True

    def keep_likeliest_drafts(self) -> None:
        if self.drafts:
            _choose_drafts(self.step, self.drafts, self.states, self.scores, self.waiting, self.feed)

    def results(self) -> list[list[tuple[PoemState, float | None]]]:
        """Per job, per poem: the likeliest candidate's state and mean log-probability."""
        out = []
        for j, job in enumerate(self.jobs):
            k_count, r_count = job.widths
            poems = []
            for p in range(len(job.seeds)):
                first = int(self.first_row[j]) + p * k_count * r_count
                candidates = list(range(first, first + k_count * r_count, r_count))
                best = candidates[int(np.argmax(self.scores.mean(candidates)))] if k_count > 1 else first
                poems.append((self.states[best], float(self.scores.mean([best])[0]) if self.scoring[j] else None))
            out.append(poems)
        return out


def _prime(step: Step, primes: list[list[int]], first_row: np.ndarray) -> np.ndarray:
    """Feed every job's prime but its last token (their outputs are not needed); jobs that share a prime
    are fed together. Returns the tokens the first step of the loop feeds: each prime's last."""
    n = int(first_row[-1])
    feed = np.empty(n, dtype=np.int64)
    by_prime: dict[tuple[int, ...], list[int]] = {}
    for j, prime in enumerate(primes):
        rows = range(int(first_row[j]), int(first_row[j + 1]))
        by_prime.setdefault(tuple(prime), []).extend(rows)
        feed[list(rows)] = prime[-1]

    def feed_prime(prime: tuple[int, ...], count: int) -> None:
        step.reset(count)
        for tok in prime[:-1]:
            step.step(np.full(count, tok, dtype=np.int64), [])

    if len(by_prime) == 1:  # the usual case: the rows' states are the step's own, nothing to gather
        feed_prime(next(iter(by_prime)), n)
        return feed
    h = c = None
    for prime, rows in by_prime.items():
        feed_prime(prime, len(rows))
        hp, cp = step.get_state()
        if h is None:
            h = np.zeros((hp.shape[0], n, hp.shape[2]), hp.dtype)
            c = np.zeros_like(h)
        h[:, rows], c[:, rows] = hp, cp
    step.reset(n)
    step.set_state(h, c)
    return feed


def _choose_drafts(step: Step, groups: list[list[int]], states: list[PoemState], scores: _Scores,
                   waiting: np.ndarray, feed: np.ndarray) -> None:  # fmt: skip
    """Where every draft of a candidate has closed its couplet (or ended), keep the likeliest couplet."""
    state = None
    for group in groups:
        if all(states[i].done for i in group):
            waiting[group] = False
            continue
        if not all(waiting[i] or states[i].done for i in group):
            continue
        best = group[int(np.argmax(scores.mean(group, part=True)))]
        if state is None:
            state = step.get_state()
        h, c = state
        for i in group:
            if i != best:
                states[i] = states[best].copy()
                h[:, i], c[:, i] = h[:, best], c[:, best]
                feed[i] = feed[best]
                scores.copy_row(i, best)
            scores.part[i], scores.part_count[i] = 0.0, 0
        waiting[group] = False
    if state is not None:
        step.set_state(*state)
