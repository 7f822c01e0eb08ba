"""The registry of distillation methods: built-ins (one module each in kdcore/methods/) and methods
from installed packages (entry-point group ``kdstudio.methods``), both loaded once, on first use.

    @register_method("kd", family="logit", params=KDParams, title="Hinton KD", paper="Hinton et al., 2015",
                     description="...")
    def build(params: KDParams, ctx: BuildContext) -> nn.Module: ...

Registration sits where the method is defined; nothing here lists methods by name.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, get_args

from pydantic import Field, create_model
from torch import nn

from kdcore.errors import KDError, UnknownNameError
from kdcore.methods.api import BuildContext, Family, MethodParams, Needs, describe_params

ENTRY_POINT_GROUP = "kdstudio.methods"
_NOT_METHOD_MODULES = {"api", "params", "registry"}

Builder = Callable[[Any, BuildContext], nn.Module]
#: where a method goes in a RunSpec: the one logit method, a hint pair's preset, or an entry of `losses`
Slot = Literal["logit", "hints", "losses"]


@dataclass(frozen=True)
class MethodRecord:
    name: str
    family: Family
    title: str
    description: str
    paper: str
    params: type[MethodParams]
    build: Builder
    needs: Needs
    short: str
    #: a hint-pair preset (a FeaturePreset of Φ_t, Φ_s, D and weight) for methods registered as data
    preset: Any = None
    origin: str = "kdcore"  # "kdcore" for built-ins, else the module that registered it
    order: int = 100  # where it is listed within its family (the classics first)

    @property
    def slot(self) -> Slot:
        if self.family == "logit":
            return "logit"
        return "hints" if self.preset is not None else "losses"

    def parameters(self) -> list[dict[str, Any]]:
        return describe_params(self.params)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "title": self.title, "description": self.description,
                "paper": self.paper, "slot": self.slot, "needs": self.needs.describe(), "origin": self.origin,
                "parameters": self.parameters()}


_records: dict[str, MethodRecord] = {}
_lock = threading.RLock()
_loaded = False
_plugin_problems: list[str] = []


def _check_params(name: str, params: type) -> None:
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise KDError(f"method {name!r}: params must be a MethodParams subclass")
    field = params.model_fields.get("method")
    if field is None or get_args(field.annotation) != (name,) or field.default != name:
        raise KDError(f'method {name!r}: its params model must declare method: Literal["{name}"] = "{name}"')


def _add(record: MethodRecord) -> None:
    with _lock:
        existing = _records.get(record.name)
        if existing is not None and existing.origin != record.origin:
            raise KDError(f"two methods are called {record.name!r} (from {existing.origin} and {record.origin}); "
                          "rename one")
        _records[record.name] = record


def register_method(name: str, *, family: Family, params: type[MethodParams], title: str, paper: str,
                    description: str, needs: Needs = Needs(), short: str | None = None,
                    order: int = 100) -> Callable[[Builder], Builder]:
    """Register the decorated builder (a function ``(params, ctx) -> loss`` or a loss class taking
    ``(params, ctx)``) as the method ``name``. ``family`` is logit, feature or relation; ``order``
    places it in listings within its family (lower first, then by name)."""
    if family not in get_args(Family):
        raise KDError(f"method {name!r}: family must be one of {', '.join(get_args(Family))}, got {family!r}")
    _check_params(name, params)

    def decorate(builder: Builder) -> Builder:
        _add(MethodRecord(name=name, family=family, title=title, description=description, paper=paper,
                          params=params, build=builder, needs=needs, short=short or title,
                          origin=_origin(builder), order=order))
        return builder

    return decorate


def register_preset(preset: Any, order: int = 100) -> Any:
    """Register a hint-pair preset (a ``kdcore.losses.FeaturePreset``: Φ_t, Φ_s, D and a weight) as a
    feature method. It is data: the loss is ``FeatureKD`` built from it for each (hint, guided) pair."""
    name = preset.name
    params = create_model(
        f"{name.title().replace('_', '')}Params", __base__=MethodParams,
        method=(Literal[name], name),  # type: ignore[valid-type]
        weight=(float, Field(preset.weight, ge=0, description="weight of this pair's feature loss")),
    )
    needs = Needs(layers=preset.teacher_point == "output", inputs=preset.teacher_point == "pre_relu")
    _add(MethodRecord(name=name, family="feature", title=preset.title, description=preset.description,
                      paper=preset.reference, params=params, build=_build_preset_unsupported, needs=needs,
                      short=name, preset=preset, origin=_origin_of_module(preset), order=order))
    return preset


def _build_preset_unsupported(params: Any, ctx: BuildContext) -> nn.Module:
    raise KDError(f"{params.method} is a hint-pair preset: use it as `preset:` of a pair under `hints`")


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    return "kdcore" if module.startswith("kdcore.") else module


def _origin_of_module(preset: Any) -> str:
    import inspect

    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame and frame.f_back else None
    module = caller.f_globals.get("__name__", "") if caller else ""
    return "kdcore" if module.startswith("kdcore.") else module


# ---- loading -----------------------------------------------------------------------------------------
def load_methods(*, reload_plugins: bool = False) -> None:
    """Import every built-in method module and every installed ``kdstudio.methods`` entry point, once.
    ``reload_plugins`` looks for entry points again (a package installed while the process runs)."""
    global _loaded
    with _lock:
        if _loaded and not reload_plugins:
            return
        first = not _loaded
        _loaded = True  # method modules import this module: set before importing them
        if first:
            import kdcore.methods as package

            for info in pkgutil.iter_modules(package.__path__):
                if info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_"):
                    importlib.import_module(f"kdcore.methods.{info.name}")
        _plugin_problems.clear()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except KDError as err:
                _plugin_problems.append(f"the method package entry point {ep.name!r} ({ep.value}) was refused: {err}")
            except Exception as err:  # a broken third-party package must not take the built-ins down
                _plugin_problems.append(f"the method package entry point {ep.name!r} ({ep.value}) failed to load: "
                                        f"{type(err).__name__}: {err}")


def plugin_problems() -> list[str]:
    """One sentence per installed method package that could not be loaded."""
    load_methods()
    return list(_plugin_problems)


def get_method(name: str) -> MethodRecord:
    load_methods()
    try:
        return _records[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"Unknown distillation method {name!r}; choose one of: "
                               f"{', '.join(sorted(_records))}.") from None


def all_methods(*, family: Family | None = None, slot: Slot | None = None) -> list[MethodRecord]:
    """Every registered method (built-ins first; by family, order, name), optionally one family or spec slot."""
    load_methods()
    families = {"logit": 0, "feature": 1, "relation": 2}
    records = sorted(_records.values(), key=lambda r: (r.origin != "kdcore", families[r.family], r.order, r.name))
    return [r for r in records if (family is None or r.family == family) and (slot is None or r.slot == slot)]


def method_names(slot: Slot | None = None) -> list[str]:
    return [r.name for r in all_methods(slot=slot)]


def parse_params(data: Any, *, slot: Slot, where: str = "method") -> MethodParams:
    """A spec entry (a mapping with ``method``) validated by its method's params model; a params object
    passes through. Unknown names and methods placed in the wrong slot raise ValueError (one sentence)."""
    if isinstance(data, MethodParams):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping with a `method` name and its parameters")
    name = data.get("method", "kd" if slot == "logit" else None)
    if name is None:
        raise ValueError(f"{where} needs a `method` name; choose one of: {', '.join(method_names(slot))}")
    try:
        record = get_method(name)
    except UnknownNameError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(method_names(slot))}") from None
    if record.slot != slot:
        place = {"logit": "`logit: {method: ...}`", "hints": "a hint pair's `preset`",
                 "losses": "an entry of `losses`"}[record.slot]
        raise ValueError(f"{name} is a {record.family} method: give it as {place}")
    return record.params.model_validate({**data, "method": name})


def build_loss(params: MethodParams, ctx: BuildContext) -> nn.Module:
    return get_method(params.method).build(params, ctx)
