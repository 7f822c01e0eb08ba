"""Contrastive representation distillation (Tian et al., ICLR 2020): make the student's embedding of a
sample identify the teacher's embedding of the same sample among many others (a contrastive bound on
their mutual information).

Both penultimate features go through a linear map to feat_dim (128) and are L2-normalised. A memory
bank holds one embedding per training sample for each side. For a batch sample i with dataset index
y_i, its positive is the bank entry y_i and its K negatives are other bank entries (16,384 in the
paper, at most num_data − 1 here; drawn uniformly from the other samples). With the temperature
τ = 0.07 and the normaliser Z fixed on the first batch (Z = mean score × num_data, as the authors do),

  P(v, m) = exp(v·m / τ) / Z,    h = P / (P + K/N)
  L_NCE = −(1/n) Σ_i [ log h(positive_i) + Σ_negatives log(1 − h) ]

in both directions: the student embedding against the teacher's bank and the teacher embedding
against the student's bank. After each training step the positives' bank entries move towards the
new embeddings with momentum 0.5 and are re-normalised. The bank and Z are buffers, so they are part
of the state dict and a checkpoint resumes them. Needs each sample's index in the training set.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.methods.api import (
    EMBEDDING,
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    Tap,
    layer_field,
)
from kdcore.methods.registry import register_method

NCE_EPS = 1e-7


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """scores (n, K+1) of normalised P values, column 0 the positive; the NCE loss, mean over the batch."""
    k = scores.shape[1] - 1
    noise = k / float(num_data)  # K · P_noise with a uniform noise distribution over the data set
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class CRDLoss(nn.Module):
    """Two-way NCE between student and teacher embeddings with per-sample memory banks."""

    def __init__(self, student_dim: int, teacher_dim: int, num_data: int, feat_dim: int = 128,
                 nce_k: int = 16384, nce_t: float = 0.07, nce_m: float = 0.5) -> None:
        super().__init__()
        if num_data < 2:
            raise KDError("CRD needs a training set of at least 2 samples to draw negatives from.")
        if not 0.0 <= nce_m < 1.0 or not nce_t > 0 or nce_k < 1:
            raise KDError("CRD needs nce_k ≥ 1, a temperature nce_t > 0 and a momentum nce_m in [0, 1).")
        self.embed_s = nn.Linear(student_dim, feat_dim)
        self.embed_t = nn.Linear(teacher_dim, feat_dim)  # trained with the student; the teacher is not
        self.num_data, self.k = int(num_data), min(int(nce_k), int(num_data) - 1)
        self.temperature, self.momentum = float(nce_t), float(nce_m)
        bound = 1.0 / math.sqrt(feat_dim / 3.0)
        self.register_buffer("memory_s", torch.rand(num_data, feat_dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("memory_t", torch.rand(num_data, feat_dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("normaliser", torch.full((2,), -1.0))  # Z for (student, teacher) anchors; −1 = unset

    def embed(self, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        return (F.normalize(self.embed_s(f_s.flatten(1)), dim=1),
                F.normalize(self.embed_t(f_t.detach().flatten(1)), dim=1))

    def sample_negatives(self, index: Tensor) -> Tensor:
        """(n, K+1) bank indices: column 0 the sample itself, then K uniform draws among the others."""
        draws = torch.randint(0, self.num_data - 1, (index.shape[0], self.k), device=index.device)
        draws = draws + (draws >= index.unsqueeze(1)).long()  # skip the positive
        return torch.cat([index.unsqueeze(1), draws], dim=1)

    def _scores(self, anchors: Tensor, bank: Tensor, contrast_index: Tensor, slot: int) -> Tensor:
        entries = bank[contrast_index]  # (n, K+1, d), no gradient: the bank is a buffer
        raw = torch.exp(torch.bmm(entries, anchors.unsqueeze(2)).squeeze(2) / self.temperature)
        if self.normaliser[slot] < 0:
            self.normaliser[slot] = raw.detach().mean() * self.num_data
        return raw / self.normaliser[slot].clone()  # a copy: the other slot may be set in place next

    def forward(self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_index: Tensor | None = None) -> Tensor:
        index = index.long().view(-1)
        if index.shape[0] != f_s.shape[0] or f_t.shape[0] != f_s.shape[0]:
            raise KDError("CRD needs one dataset index per sample and the same batch for teacher and student.")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_data):
            raise KDError(f"CRD got a sample index outside the training set of {self.num_data} samples.")
        v_s, v_t = self.embed(f_s, f_t)
        if contrast_index is None:
            contrast_index = self.sample_negatives(index)
        loss = (nce_loss(self._scores(v_s, self.memory_t, contrast_index, 0), self.num_data)
                + nce_loss(self._scores(v_t, self.memory_s, contrast_index, 1), self.num_data))
        if self.training:
            self._update_memory(index, v_s.detach(), v_t.detach())
        return loss

    @torch.no_grad()
    def _update_memory(self, index: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            mixed = bank[index] * self.momentum + v.to(bank.dtype) * (1.0 - self.momentum)
            bank.index_copy_(0, index, F.normalize(mixed, dim=1))

    def extra_repr(self) -> str:
        return f"num_data={self.num_data}, nce_k={self.k}, nce_t={self.temperature}, nce_m={self.momentum}"


class CRDParams(MethodParams):
    method: Literal["crd"] = "crd"
    weight: float = Field(0.8, ge=0, title="Weight", description="weight of the two NCE terms (the authors' 0.8)")
    feat_dim: int = Field(128, ge=2, le=4096, title="Embedding size", description="size of the contrastive embedding (128)")
    nce_k: int = Field(16384, ge=1, title="Negatives K", description="negatives per sample (16384; at most the "
                                                                    "transfer set's size − 1)")
    nce_t: float = Field(0.07, gt=0, title="Temperature τ", description="temperature of the scores (0.07)")
    nce_m: float = Field(0.5, ge=0, lt=1, title="Memory momentum", description="momentum of the memory bank update (0.5)")
    teacher_layer: str = layer_field("teacher", EMBEDDING, "the teacher layer embedded (flattened)")
    student_layer: str = layer_field("student", EMBEDDING, "the student layer embedded (flattened)")


@register_method("crd", family="relation", params=CRDParams, title="Contrastive representation distillation",
                 short="CRD", paper="Tian, Krishnan & Isola, Contrastive Representation Distillation, ICLR 2020",
                 description="A student embedding must pick out the teacher's embedding of the same sample among "
                             "many others kept in a memory bank (NCE, both directions).",
                 needs=Needs(logits=False, embedding=True, indices=True))
class CRD(MethodLoss):
    def __init__(self, p: CRDParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.taps = (Tap("teacher", p.teacher_layer), Tap("student", p.student_layer))
        t_shape, s_shape = ctx.shape(self.taps[0]), ctx.shape(self.taps[1])
        self.loss = CRDLoss(math.prod(s_shape), math.prod(t_shape), ctx.dataset_size, p.feat_dim, p.nce_k,
                            p.nce_t, p.nce_m)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if batch.indices is None:
            raise KDError("CRD needs each sample's index in the transfer set, and this batch has none.")
        nce = self.loss(batch.student(self.p.student_layer), batch.teacher(self.p.teacher_layer), batch.indices)
        return {"nce": self.p.weight * nce}
