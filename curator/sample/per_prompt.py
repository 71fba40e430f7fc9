"""`budget.per_prompt`: sample each prompt until it has K accepted answers or M answers in all.

The first round is the manifest's n samples per prompt, as without it. Each answer's verdict from
the chain's sample steps comes back here (`observe`); once a prompt has a verdict for everything
it was asked for and still has fewer than K accepted, it gets one more job: exactly the K - accepted
lowest sample indices it has no answer for (capped at M), so its keys stay deterministic.

Asking for exactly the missing count, and only when nothing of the prompt is still in flight,
means a top-up can never overshoot K: no prompt ends with more than max(n, K) accepted answers
(n > K overshoots in the first round only, as a fixed n would). With a teacher that answers the
same request the same way, the samples a prompt ends with are the shortest prefix 0..T-1 (T >= n)
holding K accepted answers (or 0..M-1), whatever the order answers land in and however often the
run is killed and resumed: a resume asks for the lowest missing indices first, which fills the
gaps a kill left before it extends the prefix.

Nothing here knows the judge: the run hands in (key, accepted) pairs and puts the jobs this
returns into the sampler's feed."""

from __future__ import annotations

from dataclasses import dataclass, field

from curator.config import PerPrompt
from curator.sample.sampler import Job


@dataclass
class PromptState:
    template: Job  # problem, messages and the key of every index 0..M-1
    stored: set[int] = field(default_factory=set)  # indices with an answer in the store
    asked: set[int] = field(default_factory=set)  # indices requested this session, not judged yet
    accepted: int = 0
    failed: bool = False  # a request of it was given up on: resume asks again

    @property
    def prompt_id(self) -> str:
        return self.template.problem.id


class PerPromptPlan:
    def __init__(self, prompts: list[Job], rule: PerPrompt, n: int, stored: set[str], accepted: set[str]):
        """prompts: one Job per prompt with keys for indices 0..max_samples-1 (indices unused);
        stored: every key in the store; accepted: the stored keys every sample step accepted."""
        self.k, self.m, self.n = rule.accepted, rule.max_samples, n
        self.prompts: list[PromptState] = []
        self.owner: dict[str, tuple[PromptState, int]] = {}
        for job in prompts:
            st = PromptState(job)
            for i, key in job.keys.items():
                self.owner[key] = (st, i)
                if key in stored:
                    st.stored.add(i)
                    st.accepted += key in accepted
            self.prompts.append(st)
        self.outstanding = 0  # samples asked for and not judged yet, over all prompts
        self.topups = 0  # jobs asked beyond the first round (this session)

    def first_jobs(self) -> list[Job]:
        """This session's first jobs: missing first-round indices, else the next top-up."""
        return [j for st in self.prompts if (j := self._next(st)) is not None]

    def _next(self, st: PromptState) -> Job | None:
        if st.asked or st.failed:
            return None
        first_round = [i for i in range(self.n) if i not in st.stored]
        if first_round:
            indices = first_round
        else:
            need = min(self.k - st.accepted, self.m - len(st.stored))
            if need <= 0:
                return None
            indices = [i for i in range(self.m) if i not in st.stored][:need]
            self.topups += 1
        st.asked.update(indices)
        self.outstanding += len(indices)
        t = st.template
        return Job(t.problem, t.messages, indices, t.keys, t._json)

    def observe(self, verdicts: list[tuple[str, bool]]) -> list[Job]:
        """Verdicts of stored answers (key, accepted by every sample step): the jobs they call for."""
        touched: dict[int, PromptState] = {}
        for key, ok in verdicts:
            hit = self.owner.get(key)
            if hit is None:
                continue  # an answer of another manifest's keys
            st, i = hit
            if i in st.stored:
                continue  # judged before (catch-up of an earlier session)
            st.stored.add(i)
            st.accepted += bool(ok)
            if i in st.asked:
                st.asked.discard(i)
                self.outstanding -= 1
            touched[id(st)] = st
        return [j for st in touched.values() if (j := self._next(st)) is not None]

    def failed(self, job: Job) -> None:
        """A job the sampler gave up on: its unanswered indices will not be judged this session."""
        hit = self.owner.get(job.keys[job.indices[0]])
        if hit is None:
            return
        st = hit[0]
        st.failed = True
        for i in job.indices:
            if i not in job.answered and i in st.asked:
                st.asked.discard(i)
                self.outstanding -= 1

    def done(self) -> bool:
        return self.outstanding == 0

    def summary(self) -> dict[str, int]:
        full = sum(st.accepted >= self.k for st in self.prompts)
        capped = sum(st.accepted < self.k and len(st.stored) >= self.m for st in self.prompts)
        return {"prompts": len(self.prompts), "reached_k": full, "hit_max_samples": capped,
                "short": len(self.prompts) - full - capped, "top_up_jobs": self.topups}
