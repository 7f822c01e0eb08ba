"""The student's own view of a sample (resolution-based distillation): grey, centre-cropped, downscaled
or noisy, made on the device from the same batch the teacher sees in full."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.spec import InputViewSpec


class InputView(nn.Module):
    def __init__(self, spec: InputViewSpec):
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        s = self.spec
        if s.grey and x.shape[1] > 1:
            x = x.mean(1, keepdim=True)
        if s.crop is not None:
            h, w = x.shape[-2:]
            ch, cw = min(h, s.crop), min(w, s.crop)
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        if s.size is not None and tuple(x.shape[-2:]) != (s.size, s.size):
            x = F.interpolate(x, size=(s.size, s.size), mode="bilinear", align_corners=False,
                              antialias=s.size < x.shape[-1])
        if s.noise_std:
            x = x + s.noise_std * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return repr(self.spec)
