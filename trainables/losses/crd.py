"""`crd`: contrastive representation distillation (Tian et al., "Contrastive Representation
Distillation", ICLR 2020).

    z_s = Embed_s(f_s), z_t = Embed_t(f_t)          linear to `dim`, L2-normalised (pooled f)
    for the batch's images i (positive: image i itself) and K negatives j ~ other classes:
      h_s(i, j) = exp(<z_s_i, m_t_j> / tau) / Z_s    m_t: the teacher memory bank (N x dim)
      h_t(i, j) = exp(<z_t_i, m_s_j> / tau) / Z_t    m_s: the student memory bank
    Z_s, Z_t: fixed on the first batch as mean(exp(...)) * N (the reference's constants)
    NCE(h) = -[log(h_pos / (h_pos + K/N)) + sum_j log((K/N) / (h_j + K/N))] per image, batch mean
    loss = ce_weight * CE(s, y) + weight * (NCE(h_s) + NCE(h_t))

After every batch the memories move towards the batch's embeddings (momentum, then L2
normalisation). This follows RepDistiller crd/criterion.py (CRDLoss, ContrastLoss, Embed,
eps 1e-7), crd/memory.py (ContrastMemory) and dataset/cifar100.py (CIFAR100InstanceSample,
mode "exact": the positive is the image's own row, negatives are drawn from the other
classes). Differences, both for speed: negatives are drawn here, on the device, from the
labels of the training split (not by the data loader), always with replacement (the
reference draws without replacement when K <= the other classes' size: the same in
distribution up to repeats, which are rare at K = 16384 of ~50,000 rows).

The batch's dataset rows come from the loader's row keys (trainables/feature_teacher.py
records them; a key of augmented view v is v * N + i, so the row is key mod N).
Memory: two N x dim float32 banks (CIFAR-100: 2 x 50,000 x 128 x 4 B = 51 MB) kept in the
trial checkpoint with the embeddings; per batch a (B, K + 1, dim) gather of each bank
(B = 64, K = 16384: 537 MB each in float32), which is why searches on a CPU pin K smaller.
"""
from __future__ import annotations

import math

import torch

from kdtune.trainables.connectors import Embed
from kdtune.trainables.losses.feature_base import FeatureLoss, Request
from kdtune.trainables.losses.hyperparameters import Hyperparameter
from kdtune.trainables.losses.registry import register_loss

EPS = 1e-7  # RepDistiller crd/criterion.py eps


def nce_loss(x: torch.Tensor, n_data: int) -> torch.Tensor:
    """ContrastLoss (eq. 18): x (B, K + 1) with the positive in column 0."""
    m = x.shape[1] - 1
    noise = m / float(n_data)
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + noise + EPS))
    log_d0 = torch.log(noise / (x[:, 1:] + noise + EPS))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


def negative_table(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, N) rows of each class's negatives (the indices of every other class, padded) and
    their counts (C,)."""
    classes = int(labels.max()) + 1
    n = len(labels)
    table = torch.zeros(classes, n, dtype=torch.int64)
    counts = torch.zeros(classes, dtype=torch.int64)
    all_idx = torch.arange(n)
    for c in range(classes):
        others = all_idx[labels != c]
        table[c, :len(others)] = others
        counts[c] = len(others)
    return table, counts


@register_loss
class CRDLoss(FeatureLoss):
    """Contrastive representation distillation.

    weight: 0.8 (mdistiller CFG.CRD.LOSS.FEAT_WEIGHT; RepDistiller's README `-a 0 -b 0.8`).
    ce_weight: 1 (mdistiller CFG.CRD.LOSS.CE_WEIGHT; RepDistiller `-r 1`).
    negatives: K = 16384 (RepDistiller --nce_k, mdistiller CFG.CRD.NCE.NUM_NEGATIVE).
    temperature: tau = 0.07 (RepDistiller --nce_t, mdistiller CFG.CRD.NCE.TEMPERATURE).
    momentum: 0.5 of the memory update (RepDistiller --nce_m, mdistiller CFG.CRD.NCE.MOMENTUM).
    dim: 128, the embedding width (RepDistiller --feat_dim, mdistiller CFG.CRD.FEAT.DIM).
    """

    name = "crd"
    hyperparameters = (
        Hyperparameter("crd_weight", 0.8, low=0.0, search=(0.1, 8.0), log=True, kwarg="weight",
                       source="mdistiller CFG.CRD.LOSS.FEAT_WEIGHT; RepDistiller -b 0.8",
                       help="weight of the two NCE terms (CE weight 1)"),
        # pinned at the reference; a (B, K+1, dim) gather per bank per batch is 0.5 GB at
        # B = 64, so CPU searches pin it lower (the NCE noise term scales with K/N either way)
        Hyperparameter("crd_negatives", 16384, kind="int", low=1, kwarg="negatives",
                       source="RepDistiller --nce_k; mdistiller CFG.CRD.NCE.NUM_NEGATIVE",
                       help="K negatives (rows of other classes) per positive"),
        Hyperparameter("crd_temperature", 0.07, low=0.0, low_open=True, kwarg="temperature",
                       short="tau", source="RepDistiller --nce_t; mdistiller CFG.CRD.NCE.TEMPERATURE",
                       help="NCE temperature of the embedding dot products"),
        Hyperparameter("crd_momentum", 0.5, low=0.0, high=1.0, high_open=True, kwarg="momentum",
                       source="RepDistiller --nce_m; mdistiller CFG.CRD.NCE.MOMENTUM",
                       help="memory-bank update momentum"),
        Hyperparameter("crd_dim", 128, kind="int", low=1, kwarg="dim",
                       source="RepDistiller --feat_dim; mdistiller CFG.CRD.FEAT.DIM",
                       help="embedding width"),
    )

    def __init__(self, weight: float = 0.8, negatives: int = 16384, temperature: float = 0.07,
                 momentum: float = 0.5, dim: int = 128, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ce_weight, label_smoothing)
        if negatives < 1 or dim < 1 or not temperature > 0 or not 0 <= momentum < 1:
            raise ValueError(f"crd: negatives and dim must be >= 1, temperature > 0, momentum in "
                             f"[0, 1); got {negatives}, {dim}, {temperature}, {momentum}")
        self.negatives, self.temperature = int(negatives), float(temperature)
        self.momentum, self.dim = float(momentum), int(dim)

    def requests(self, s_info, t_info):
        return Request(pooled=True)

    def build(self, s_info, t_info, pooled_dims, train_labels):
        if train_labels is None:
            raise ValueError("crd needs the training split's labels (its negatives are other classes' rows)")
        s_dim, t_dim = pooled_dims
        self.embed_s, self.embed_t = Embed(s_dim, self.dim), Embed(t_dim, self.dim)
        n = len(train_labels)
        self.n_data = n
        stdv = 1.0 / math.sqrt(self.dim / 3)  # the reference's initialisation
        self.register_buffer("memory_s", torch.rand(n, self.dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n, self.dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # Z_s, Z_t; < 0: not set yet
        table, counts = negative_table(train_labels.cpu())
        # not checkpointed (persistent=False): rebuilt from the labels
        self.register_buffer("neg_table", table, persistent=False)
        self.register_buffer("neg_counts", counts, persistent=False)
        self.register_buffer("labels_all", train_labels.cpu().long(), persistent=False)

    def sample(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, K + 1) dataset rows: the positive, then K negatives from other classes."""
        cls = self.labels_all[rows]
        u = torch.rand(len(rows), self.negatives, device=rows.device)
        pick = (u * self.neg_counts[cls].unsqueeze(1)).long()
        neg = torch.gather(self.neg_table[cls], 1, pick)
        return torch.cat([rows.unsqueeze(1), neg], dim=1)

    def scores(self, rows, contrast_rows, z_s, z_t):
        """(h_s, h_t): exp(<z, memory of the other model> / tau) / Z, and update Z once."""
        b, k1 = contrast_rows.shape
        w_t = self.memory_t[contrast_rows.flatten()].view(b, k1, self.dim)
        w_s = self.memory_s[contrast_rows.flatten()].view(b, k1, self.dim)
        out_s = torch.exp(torch.bmm(w_t, z_s.unsqueeze(2)).squeeze(2) / self.temperature)
        out_t = torch.exp(torch.bmm(w_s, z_t.unsqueeze(2)).squeeze(2) / self.temperature)
        if self.z[0] < 0:  # the reference fixes Z from the first batch
            self.z[0] = out_s.detach().mean() * self.n_data
            self.z[1] = out_t.detach().mean() * self.n_data
        return out_s / self.z[0], out_t / self.z[1]

    @torch.no_grad()
    def update_memory(self, rows, z_s, z_t):
        for bank, z in ((self.memory_s, z_s), (self.memory_t, z_t)):
            pos = bank[rows] * self.momentum + z.detach() * (1 - self.momentum)
            bank.index_copy_(0, rows, torch.nn.functional.normalize(pos, dim=1))

    def feature_term(self, batch):
        if batch.idx is None:
            raise RuntimeError("crd needs the batch's dataset rows (the teacher source's last_idx)")
        rows = batch.idx.to(self.memory_s.device).long() % self.n_data
        z_s, z_t = self.embed_s(batch.student_pooled), self.embed_t(batch.teacher_pooled)
        h_s, h_t = self.scores(rows, self.sample(rows), z_s, z_t)
        loss = nce_loss(h_s, self.n_data) + nce_loss(h_t, self.n_data)
        self.update_memory(rows, z_s, z_t)
        return loss

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, negatives={self.negatives}, temperature={self.temperature}, "
                f"momentum={self.momentum}, dim={self.dim}, ce_weight={self.ce_weight}")
