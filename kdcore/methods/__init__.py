"""Distillation methods as plugins: one module per method, registered where it is defined.

    from kdcore.methods import register_method, MethodParams, MethodLoss, Batch, BuildContext, Tap

See docs/adding-a-method.md. Built-ins are the other modules of this package; installed packages add
methods through the ``kdstudio.methods`` entry-point group. Both load once, on first use.

Names resolve lazily so that ``kdcore.methods.params`` (all a RunSpec needs) loads without torch."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "kdcore.methods.params": ("MethodParams",),
    "kdcore.methods.api": ("EMBEDDING", "Batch", "BuildContext", "Family", "MethodLoss", "Needs", "Tap",
                           "describe_params", "layer_field", "layers_field"),
    "kdcore.methods.registry": ("ENTRY_POINT_GROUP", "MethodRecord", "all_methods", "build_loss", "get_method",
                                "load_methods", "method_names", "parse_params", "plugin_problems",
                                "register_method", "register_preset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from kdcore.methods.api import (
        EMBEDDING,
        Batch,
        BuildContext,
        Family,
        MethodLoss,
        Needs,
        Tap,
        describe_params,
        layer_field,
        layers_field,
    )
    from kdcore.methods.params import MethodParams
    from kdcore.methods.registry import (
        ENTRY_POINT_GROUP,
        MethodRecord,
        all_methods,
        build_loss,
        get_method,
        load_methods,
        method_names,
        parse_params,
        plugin_problems,
        register_method,
        register_preset,
    )


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'kdcore.methods' has no attribute {name!r}")
