"""Feature-based distillation: the survey's L_FB = D(Φ_t(f_t), Φ_s(f_s)) for one (hint, guided) pair.

One class, ``FeatureKD``, covers every method: a method is a choice of teacher transform Φ_t,
student transform Φ_s and distance D (see ``presets.py``). Shapes exclude the batch dimension:
``(C, H, W)`` for feature maps, ``(D,)`` for flat vectors.

Teacher transforms (no trainable parameters, the teacher is never trained):
  identity     the hint as it is
  attention    Zagoruyko's attention map normalize(|f|^2.mean(1).flatten(1)); channels drop out
  margin_relu  Heo's max(f, margin) per channel, margins from the teacher's BatchNorm (a buffer)
Student transforms:
  identity     as it is, except a parameter-free resize when only the spatial size differs
  regressor    trainable 1×1 conv + BN for maps, Linear + BN1d for vectors (optionally + ReLU)
  attention    the same attention map as the teacher's
Distances D(t, s):
  l1          mean absolute error
  l2          mean squared error, mean reduction (FitNets; with attention maps it is AT's loss)
  mmd         NST: per-channel L2-normalised spatial maps, kernel (xᵀy)², mean K(t,t)+mean K(s,s)−2·mean K(s,t)
  kl          KL(softmax(t_flat) ‖ softmax(s_flat)), mean over the batch
  partial_l2  OFD: squared error where (s > t) | (t > 0), summed and divided by the batch size
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from kdcore.errors import IncompatibleLayersError, KDError, UnknownNameError
from kdcore.losses.logits import check_weight

TEACHER_TRANSFORMS = ("identity", "attention", "margin_relu")
STUDENT_TRANSFORMS = ("identity", "regressor", "attention")
DISTANCES = ("l1", "l2", "mmd", "kl", "partial_l2")

# Distances that compare two tensors entry by entry, so both sides must end up the same shape.
_ELEMENTWISE = ("l1", "l2", "kl", "partial_l2")
# Distances that make sense on attention maps (a normalised vector per sample, no channels).
_ATTENTION_DISTANCES = ("l1", "l2", "kl")


# ----------------------------------------------------------------------------- compatibility


@dataclass(frozen=True)
class PairCheck:
    """Whether a (hint, guided) pair can be distilled with the chosen Φ_t, Φ_s and D.

    ``transform`` names what is applied to the student to meet the teacher: "identity", "resize",
    "regressor", "regressor+resize", "attention", "attention+pool", "pool", "regressor+pool".
    When not ok it names the transform that *would* be needed, or "none" when nothing can help.
    ``reason`` is one sentence: the explanation when ok, what is wrong and what to do when not."""

    ok: bool
    transform: str
    reason: str


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"flat vector ({shape[0]})"
    return f"4-D map ({_shape_text(shape)})"


def _normalise_shape(shape) -> tuple[int, ...] | None:
    """The shape as a tuple of positive ints when it is a (C,H,W) map or a (D,) vector, else None."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None
    if len(dims) not in (1, 3) or any(d <= 0 for d in dims):
        return None
    return dims


def _check_names(phi_t: str, phi_s: str, distance: str) -> None:
    for value, valid, what in (
        (phi_t, TEACHER_TRANSFORMS, "teacher transform"),
        (phi_s, STUDENT_TRANSFORMS, "student transform"),
        (distance, DISTANCES, "feature distance"),
    ):
        if value not in valid:
            raise UnknownNameError(f"Unknown {what} {value!r}; choose one of: {', '.join(valid)}.")


def _common_size(t_hw: tuple[int, int], s_hw: tuple[int, int]) -> tuple[int, int]:
    """The spatial size both maps are pooled to when the larger is averaged down to the smaller."""
    return (min(t_hw[0], s_hw[0]), min(t_hw[1], s_hw[1]))


def check_pair(
    teacher_shape: tuple[int, ...],
    student_shape: tuple[int, ...],
    phi_t: str = "identity",
    phi_s: str = "identity",
    distance: str = "l2",
) -> PairCheck:
    """Decide whether D(Φ_t(f_t), Φ_s(f_s)) is defined for these shapes and which student transform it needs.

    Unknown transform or distance names raise UnknownNameError; every shape problem is reported
    as ``PairCheck(ok=False, ...)`` with a one-sentence reason."""
    _check_names(phi_t, phi_s, distance)
    t = _normalise_shape(teacher_shape)
    s = _normalise_shape(student_shape)
    for side, raw, norm in (("teacher", teacher_shape, t), ("student", student_shape, s)):
        if norm is None:
            return PairCheck(
                False,
                "none",
                f"The {side} layer's output {tuple(raw)!r} is neither a feature map (C×H×W) nor a flat vector (D), "
                "so it cannot be distilled.",
            )
    assert t is not None and s is not None
    if len(t) != len(s):
        return PairCheck(
            False,
            "none",
            f"The teacher's {_describe(t)} cannot be matched against the student's {_describe(s)}; "
            "pick two feature maps or two flat vectors.",
        )
    is_map = len(t) == 3

    # Attention transfer: channels drop out, the larger map is pooled to the smaller.
    if "attention" in (phi_t, phi_s):
        if phi_t != "attention" or phi_s != "attention":
            return PairCheck(
                False,
                "attention",
                "An attention map can only be compared with another attention map; "
                "set both transforms to 'attention'.",
            )
        if not is_map:
            return PairCheck(
                False,
                "none",
                f"Attention maps need feature maps (C×H×W), but the pair is {_shape_text(t)} "
                f"and {_shape_text(s)} flat vectors.",
            )
        if distance not in _ATTENTION_DISTANCES:
            return PairCheck(
                False,
                "attention",
                f"The distance {distance!r} does not apply to attention maps, which have no channels; "
                "use l2, l1 or kl.",
            )
        if t[1:] == s[1:]:
            return PairCheck(
                True,
                "attention",
                f"Attention maps ({_shape_text(t[1:])}) are compared directly; "
                f"channel counts ({t[0]} vs {s[0]}) do not matter.",
            )
        common = _common_size(t[1:], s[1:])
        return PairCheck(
            True,
            "attention+pool",
            f"The larger map is average-pooled to {_shape_text(common)} before the attention maps "
            "are compared; channel counts do not matter.",
        )

    # NST's MMD compares each channel's spatial map with every other's: channels may differ.
    if distance == "mmd":
        if not is_map:
            return PairCheck(
                False,
                "none",
                "The mmd (NST) distance compares the channels' spatial maps, "
                "so both layers must be feature maps (C×H×W).",
            )
        regressor = phi_s == "regressor"
        channel_note = (
            f"a 1×1 conv + BN regressor maps {s[0]} → {t[0]} channels"
            if regressor
            else f"channel counts may differ ({t[0]} vs {s[0]})"
        )
        if t[1:] == s[1:]:
            transform = "regressor" if regressor else "identity"
            return PairCheck(True, transform, f"Same spatial size ({_shape_text(t[1:])}); {channel_note}.")
        common = _common_size(t[1:], s[1:])
        return PairCheck(
            True,
            "regressor+pool" if regressor else "pool",
            f"The larger map is average-pooled to {_shape_text(common)} so both have the same "
            f"spatial size; {channel_note}.",
        )

    # Element-wise distances: the student must end up exactly the teacher's shape.
    assert distance in _ELEMENTWISE
    same_channels = t[0] == s[0]
    needs_resize = is_map and t[1:] != s[1:]
    resize_note = f"the student map is resized from {_shape_text(s[1:])} to {_shape_text(t[1:])}"
    if phi_s == "regressor":
        if is_map:
            what = f"a 1×1 conv + BN regressor maps {s[0]} → {t[0]} channels"
            if needs_resize:
                what += f" and {resize_note}"
        else:
            what = f"a Linear + BatchNorm1d regressor maps {s[0]} → {t[0]} features"
        transform = "regressor+resize" if needs_resize else "regressor"
        return PairCheck(True, transform, f"The student is transformed to the teacher's shape: {what}.")

    # phi_s == "identity": only a parameter-free resize is allowed.
    if same_channels and not needs_resize:
        return PairCheck(True, "identity", f"Same shape ({_shape_text(t)}): compared directly.")
    if same_channels:
        return PairCheck(True, "resize", f"Same channels ({t[0]}); {resize_note}.")
    unit = "channels" if is_map else "features"
    return PairCheck(
        False,
        "regressor+resize" if needs_resize else "regressor",
        f"The teacher has {t[0]} {unit} but the student has {s[0]}, which the identity transform cannot bridge; "
        "use the 'regressor' student transform.",
    )


# ----------------------------------------------------------------------------- transforms


def attention_map(f: Tensor, p: int = 2) -> Tensor:
    """Zagoruyko's attention map: normalize(|f|^p averaged over channels, flattened), shape (N, H·W).

    |f| keeps odd p meaningful (a negative activation is as much attention as a positive one). Half
    precision is raised to float32 first: 256² already overflows fp16."""
    if f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def margins_from_bn(bn: nn.BatchNorm2d) -> Tensor:
    """OFD's per-channel margin from the teacher BN that feeds the hint (s = |γ|, m = β):

        m − s·φ(m/s)/Φ(−m/s)   if Φ(−m/s) > 0.001   else   −3s

    the expected value of the pre-ReLU response given that it is negative. Computed in float64,
    returned as float32 on the BN's device, detached."""
    if not isinstance(bn, _BatchNorm):
        raise KDError(f"Margins need a BatchNorm layer, got {type(bn).__name__}.")
    if bn.affine:
        gamma, beta = bn.weight.detach(), bn.bias.detach()
    else:  # a BN without affine parameters behaves as γ=1, β=0
        gamma = torch.ones(bn.num_features, device=bn.running_mean.device if bn.running_mean is not None else None)
        beta = torch.zeros_like(gamma)
    s = gamma.double().abs().clamp_min(1e-12)  # γ = 0 would make m/s undefined
    m = beta.double()
    ratio = m / s
    cdf = torch.special.ndtr(-ratio)
    pdf = torch.exp(-0.5 * ratio**2) / math.sqrt(2.0 * math.pi)
    margin = torch.where(cdf > 0.001, m - s * pdf / cdf.clamp_min(1e-300), -3.0 * s)
    return margin.float()


class MarginReLU(nn.Module):
    """max(f, margin) per channel; the margins are a buffer, not parameters."""

    def __init__(self, margin: Tensor) -> None:
        super().__init__()
        self.register_buffer("margin", margin.detach().clone().float())

    def forward(self, f: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (f.dim() - 2)
        return torch.maximum(f, self.margin.view(shape).to(f.dtype))


class AttentionMap(nn.Module):
    def __init__(self, p: int = 2) -> None:
        super().__init__()
        self.p = p

    def forward(self, f: Tensor) -> Tensor:
        return attention_map(f, self.p)


class PoolTo(nn.Module):
    """Adaptive average pooling to ``size`` when the map is larger; a no-op when it already fits."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, f: Tensor) -> Tensor:
        return f if tuple(f.shape[-2:]) == self.size else F.adaptive_avg_pool2d(f, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class ResizeTo(nn.Module):
    """Bring a student map to the teacher's H×W: average-pool when larger, bilinear upsampling otherwise."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, f: Tensor) -> Tensor:
        h, w = f.shape[-2:]
        if (h, w) == self.size:
            return f
        if h >= self.size[0] and w >= self.size[1]:
            return F.adaptive_avg_pool2d(f, self.size)
        return F.interpolate(f, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def build_regressor(in_features: int, out_features: int, is_map: bool, relu: bool = False) -> nn.Sequential:
    """The trainable student connector: 1×1 conv + BN for maps, Linear + BN1d for vectors (+ ReLU)."""
    if is_map:
        layers: list[nn.Module] = [
            nn.Conv2d(in_features, out_features, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_features),
        ]
    else:
        layers = [nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- distances


def l1_distance(t: Tensor, s: Tensor) -> Tensor:
    return (s - t).abs().mean()


def l2_distance(t: Tensor, s: Tensor) -> Tensor:
    return (s - t).pow(2).mean()


def _gram_poly(a: Tensor, b: Tensor) -> Tensor:
    """(N, Ca, Cb) polynomial kernel (aᵢᵀbⱼ)² between the rows of a (N, Ca, L) and b (N, Cb, L)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


def mmd_distance(t: Tensor, s: Tensor) -> Tensor:
    """NST (Huang & Wang): squared MMD with kernel (xᵀy)² between the channels' normalised spatial maps."""
    t = F.normalize(t.flatten(2), dim=2)
    s = F.normalize(s.flatten(2), dim=2)
    return _gram_poly(t, t).mean() + _gram_poly(s, s).mean() - 2.0 * _gram_poly(s, t).mean()


def kl_distance(t: Tensor, s: Tensor) -> Tensor:
    """KL(softmax(t_flat) ‖ softmax(s_flat)) summed over entries, mean over the batch."""
    log_p_t = torch.log_softmax(t.flatten(1), dim=1)
    log_p_s = torch.log_softmax(s.flatten(1), dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def partial_l2_distance(t: Tensor, s: Tensor) -> Tensor:
    """OFD: squared error only where the student is above the teacher or the teacher is positive.

    Where the (margin-ReLU'd) teacher is negative and the student is already below it, the ReLU
    after the layer would erase the difference, so it is not penalised."""
    mask = (s > t) | (t > 0)
    return ((s - t).pow(2) * mask.to(s.dtype)).sum() / s.shape[0]


DISTANCE_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": l1_distance,
    "l2": l2_distance,
    "mmd": mmd_distance,
    "kl": kl_distance,
    "partial_l2": partial_l2_distance,
}


# ----------------------------------------------------------------------------- the loss


def _at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision features (AMP) are compared in float32: sums of squares overflow or lose bits in fp16."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class FeatureKD(nn.Module):
    """weight · D(Φ_t(f_t.detach()), Φ_s(f_s)) for one (hint, guided) pair; returns a scalar.

    Raises IncompatibleLayersError with ``check_pair``'s reason when the pair cannot be bridged.
    The teacher side has no trainable parameters (OFD margins are a buffer); the student-side
    regressor is trainable and must be handed to the optimiser with the student's parameters."""

    def __init__(
        self,
        teacher_shape: tuple[int, ...],
        student_shape: tuple[int, ...],
        phi_t: str = "identity",
        phi_s: str = "identity",
        distance: str = "l2",
        weight: float = 1.0,
        teacher_bn: nn.BatchNorm2d | None = None,
        regressor_relu: bool = False,
    ) -> None:
        super().__init__()
        check = check_pair(teacher_shape, student_shape, phi_t, phi_s, distance)
        if not check.ok:
            raise IncompatibleLayersError(check.reason)
        weight = check_weight("The feature loss weight", weight)

        self.teacher_shape = tuple(int(d) for d in teacher_shape)
        self.student_shape = tuple(int(d) for d in student_shape)
        self.phi_t, self.phi_s, self.distance = phi_t, phi_s, distance
        self.weight = weight
        self.check = check
        self.distance_fn = DISTANCE_FUNCTIONS[distance]

        t, s = self.teacher_shape, self.student_shape
        is_map = len(t) == 3
        teacher_steps: list[nn.Module] = []
        student_steps: list[nn.Module] = []

        if phi_t == "margin_relu":
            if teacher_bn is None:
                raise IncompatibleLayersError(
                    "The margin_relu teacher transform needs the teacher's BatchNorm layer that feeds the hint layer."
                )
            margin = margins_from_bn(teacher_bn)
            if margin.numel() != t[0]:
                raise IncompatibleLayersError(
                    f"The teacher BatchNorm has {margin.numel()} channels but the hint layer has {t[0]}; "
                    "pick the BatchNorm that feeds the hint layer."
                )
            teacher_steps.append(MarginReLU(margin))

        if check.transform.endswith("pool"):  # attention and mmd: pool the larger map to the smaller
            common = _common_size(t[1:], s[1:])
            teacher_steps.append(PoolTo(common))
            student_steps.append(PoolTo(common))
        if check.transform.endswith("resize"):  # element-wise: student map to the teacher's H×W
            student_steps.append(ResizeTo(t[1:]))
        if phi_s == "regressor":
            student_steps.append(build_regressor(s[0], t[0], is_map, relu=regressor_relu))
        if phi_t == "attention":
            teacher_steps.append(AttentionMap())
        if phi_s == "attention":
            student_steps.append(AttentionMap())

        self.teacher_transform = nn.Sequential(*teacher_steps)
        self.student_transform = nn.Sequential(*student_steps)

    def _check_input(self, f: Tensor, side: str, expected: tuple[int, ...]) -> None:
        if tuple(f.shape[1:]) != expected:
            raise KDError(
                f"The {side} features have shape {tuple(f.shape[1:])} (without the batch) "
                f"but this loss was built for {expected}."
            )

    def forward(self, f_t: Tensor, f_s: Tensor) -> Tensor:
        self._check_input(f_t, "teacher", self.teacher_shape)
        self._check_input(f_s, "student", self.student_shape)
        if f_t.shape[0] != f_s.shape[0]:
            raise KDError(f"The teacher batch ({f_t.shape[0]}) and the student batch ({f_s.shape[0]}) differ.")
        target = _at_least_fp32(self.teacher_transform(f_t.detach()))
        guided = _at_least_fp32(self.student_transform(f_s))
        # autocast would send mmd's matmuls back to half precision
        with torch.autocast(device_type=guided.device.type, enabled=False):
            return self.weight * self.distance_fn(target, guided)

    def extra_repr(self) -> str:
        return (
            f"teacher={self.teacher_shape}, student={self.student_shape}, phi_t={self.phi_t!r}, "
            f"phi_s={self.phi_s!r}, distance={self.distance!r}, weight={self.weight}"
        )
