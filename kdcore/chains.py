"""Teacher chains from one spec: teacher → assistant → student (TAKD, Mirzadeh et al.) or N born-again
generations (Furlanello et al.), queued as dependent runs, each distilling from the run before it.

    chain: {students: [cnn_small, mlp_64]}   # link 1 learns from the spec's teacher, link 2 from link 1
    chain: {generations: 3}                  # three generations of the spec's student, each the next's teacher

Link 1 learns from the spec's teacher, or from the labels alone when the spec has none (born-again's first
generation). Every later link's teacher is the run before it; a failed link fails the links after it."""
from __future__ import annotations

import copy
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kdcore.spec import RunSpec, SpecError, _Strict, format_validation_error

MAX_LINKS = 20
PENDING = "pending"  # the teacher run id of a link whose predecessor is not queued yet


class ChainSpec(_Strict):
    students: list[str] | None = Field(None, min_length=1, max_length=MAX_LINKS,
                                       description="each link's student model, in order (TAKD: assistants, then the student)")
    generations: int | None = Field(None, ge=1, le=MAX_LINKS,
                                    description="born-again: this many generations of the spec's student")

    @model_validator(mode="after")
    def _one_form(self) -> ChainSpec:
        if (self.students is None) == (self.generations is None):
            raise ValueError("a chain gives either `students` (a list of models) or `generations` (a number)")
        return self

    def models(self, student: str) -> list[str]:
        return list(self.students) if self.students is not None else [student] * int(self.generations)

    @property
    def kind(self) -> str:
        return "generation" if self.generations is not None else "link"


def parse_chain(data: dict[str, Any]) -> tuple[ChainSpec, list[dict[str, Any]]]:
    """The chain block and each link's spec mapping (later links name PENDING as their teacher run)."""
    data = copy.deepcopy(data)
    raw = data.pop("chain")
    if "sweep" in data:
        raise SpecError(["chain: a spec holds a chain or a sweep, not both"])
    try:
        chain = ChainSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(["chain." + p for p in format_validation_error(err)]) from None
    models = chain.models(data.get("student", RunSpec().student))
    base = data.get("name") or ("born-again" if chain.generations else "chain")
    links = []
    for k, model in enumerate(models):
        link = copy.deepcopy(data)
        link["student"] = model
        link["name"] = f"{base} · {chain.kind} {k + 1} of {len(models)} ({model})"
        if k > 0:
            link["teacher"] = {"source": "run", "run_id": PENDING}
        elif not link.get("teacher"):  # the first link learns from labels: nothing to distil from
            for key in ("hints", "losses", "hint_stage_epochs", "logit"):
                link.pop(key, None)
        try:
            RunSpec.from_dict(link)
        except SpecError as err:
            raise SpecError([f"chain {chain.kind} {k + 1}: {p}" for p in err.problems]) from None
        links.append(link)
    return chain, links


def is_chain(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and "chain" in data
