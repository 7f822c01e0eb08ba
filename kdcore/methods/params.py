"""The base of every method's parameters model. Kept free of torch so a RunSpec loads without it."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MethodParams(BaseModel):
    """Base of every method's parameters. A subclass names its method (``method: Literal["kd"] = "kd"``)
    and declares each parameter with its published default, a range (``Field(ge=..., le=...)``) and a
    ``description`` (shown as help text in the form and by ``python -m kdcore methods``)."""

    # Unknown keys are refused (a typo is reported, not ignored); NaN and infinities are refused too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, str_max_length=1000,
                              defer_build=True)

    method: str

    def label(self) -> str:
        """A short name for tables ("KD ρ=4", "DKD"); the record's title by default."""
        from kdcore.methods.registry import get_method

        return get_method(self.method).short
