"""Bipartite matching of predicted triplets to ground-truth actors (BMViT Eq. 1).

The cost of assigning prediction ``i`` to ground-truth actor ``j`` is, with ordinary binary
cross-entropies (the printed minus signs of Eq. 1 are a typo: a cost must grow when the
predicted probability of the true label falls)::

    C(i, j) = w_l1 * |b_j - b̂_i|_1 + w_giou * (1 - GIoU(b_j, b̂_i))
            + w_actor * BCE(1, p(α_i)) + w_action * Σ_c BCE(a_jc, p(a_ic))

Only annotated actors (α = 1) are columns of the cost matrix; the remaining tokens are
"no actor". The weights default to 1 (Eq. 1 has none) and are config keys.

:func:`centre_cell_positives` is an optional training aid, not in the paper: every token whose
grid cell contains a ground-truth centre is also assigned to that actor (one-to-few assignment),
which speeds up convergence of small models; inference then needs NMS.
:func:`centre_region_positives` widens it to nearby cells. :data:`EXTRA_POSITIVES` is the table of
these aids by their ``loss.extra_positives`` name (the one list of that option).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from bmvit.boxes import cxcywh_to_xyxy, generalized_box_iou

Match = tuple[Tensor, Tensor]  # (pred indices (M,), gt indices (M,)), both int64


class HungarianMatcher:
    def __init__(self, cost_l1: float = 1.0, cost_giou: float = 1.0, cost_actor: float = 1.0, cost_action: float = 1.0) -> None:
        self.w_l1, self.w_giou, self.w_actor, self.w_action = cost_l1, cost_giou, cost_actor, cost_action

    @torch.no_grad()
    def cost_matrix(self, boxes: Tensor, actor_logits: Tensor, action_logits: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
        """boxes (L, 4) cxcywh, actor_logits (L,), action_logits (L, K), gt_boxes (N, 4), gt_labels (N, K) -> (L, N)."""
        boxes, gt_boxes = boxes.float(), gt_boxes.float()
        c_l1 = torch.cdist(boxes, gt_boxes, p=1)  # (L, N)
        c_giou = 1 - generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes))  # (L, N)
        c_actor = F.softplus(-actor_logits.float())[:, None]  # BCE(1, p) = -log p: (L, 1)
        x = action_logits.float()
        y = gt_labels.float()
        c_action = F.softplus(-x) @ y.T + F.softplus(x) @ (1 - y).T  # Σ_c BCE: (L, N)
        return self.w_l1 * c_l1 + self.w_giou * c_giou + self.w_actor * c_actor + self.w_action * c_action

    @torch.no_grad()
    def __call__(self, outputs: dict[str, Tensor], targets: list[dict], valid: Tensor | None = None) -> list[Match]:
        """One optimal assignment per clip; clips with no actors get empty matches.

        ``valid (B, L)`` bool (padded batches, :func:`bmvit.data.collate.valid_tokens`): only
        valid tokens are candidates; ``None`` means all are. A clip with more actors than valid
        tokens leaves the surplus actors unmatched."""
        matches = []
        for b, t in enumerate(targets):
            n = len(t["boxes"])
            rows_ok = None if valid is None else torch.nonzero(valid[b]).flatten()  # (L_b,) candidate tokens
            if n == 0 or (rows_ok is not None and len(rows_ok) == 0):
                empty = torch.zeros(0, dtype=torch.long)
                matches.append((empty, empty))
                continue
            boxes, actor, action = outputs["boxes"][b], outputs["actor_logits"][b], outputs["action_logits"][b]
            if rows_ok is not None:
                boxes, actor, action = boxes[rows_ok], actor[rows_ok], action[rows_ok]
            cost = self.cost_matrix(boxes, actor, action, t["boxes"], t["labels"])  # (L_b, N)
            rows, cols = linear_sum_assignment(cost.nan_to_num(1e9, 1e9, -1e9).cpu().numpy())  # NaN/inf: nan_policy decides
            rows = torch.as_tensor(rows, dtype=torch.long)
            if rows_ok is not None:
                rows = rows_ok.cpu()[rows]
            matches.append((rows, torch.as_tensor(cols, dtype=torch.long)))
        return matches


def centre_cell_positives(matches: list[Match], cells: Tensor, targets: list[dict],
                          valid: Tensor | None = None) -> list[Match]:
    """Add every token whose cell contains a GT box centre as an extra positive of that GT.

    ``cells (L, 4)`` cxcywh of each token's cell. Tokens already assigned keep their assignment;
    when several GT centres share a cell, the first GT takes it. Tokens outside ``valid (B, L)``
    (padding) are never added.
    """
    out = []
    cells = cells.cpu()
    lo, hi = cells[:, :2] - cells[:, 2:] / 2, cells[:, :2] + cells[:, 2:] / 2  # (L, 2)
    for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
        if len(t["boxes"]) == 0:
            out.append((rows, cols))
            continue
        centres = t["boxes"][:, :2].detach().cpu().float()  # (N, 2)
        inside = ((centres[None] >= lo[:, None]) & (centres[None] < hi[:, None])).all(-1)  # (L, N)
        taken = torch.zeros(len(cells), dtype=torch.bool) if valid is None else ~valid[b].cpu()
        taken[rows] = True
        extra_r, extra_c = [], []
        for j in range(inside.shape[1]):
            idx = torch.nonzero(inside[:, j] & ~taken).flatten()
            taken[idx] = True
            extra_r.append(idx)
            extra_c.append(torch.full_like(idx, j))
        out.append((torch.cat([rows, *extra_r]), torch.cat([cols, *extra_c])))
    return out


def centre_region_positives(matches: list[Match], cells: Tensor, targets: list[dict], radius: float = 1.0,
                            valid: Tensor | None = None) -> list[Match]:
    """Add every token whose cell *centre* lies within ``radius`` cells of a GT box centre (per axis,
    in units of the token's cell size) and inside that box as an extra positive of that GT.

    FCOS-style "centre sampling": with ``radius = 1`` up to a 3×3 block of cells per temporal
    slice around each actor's centre. The centre cell itself always qualifies. A token claimed
    by several actors goes to the one whose centre is nearest (in cells). Tokens already
    assigned by the Hungarian matching keep their assignment; tokens outside ``valid (B, L)``
    (padding) are never added.
    """
    out = []
    cells = cells.cpu().float()
    ctr, size = cells[:, :2], cells[:, 2:]  # (L, 2)
    lo, hi = ctr - size / 2, ctr + size / 2
    for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
        if len(t["boxes"]) == 0:
            out.append((rows, cols))
            continue
        gt = t["boxes"].detach().cpu().float()  # (N, 4) cxcywh
        d = (ctr[:, None] - gt[None, :, :2]).abs() / size[:, None]  # (L, N, 2) distance in cells
        home = ((gt[None, :, :2] >= lo[:, None]) & (gt[None, :, :2] < hi[:, None])).all(-1)  # (L, N) centre cell
        inside = ((ctr[:, None] - gt[None, :, :2]).abs() <= gt[None, :, 2:] / 2).all(-1)  # (L, N) cell centre in box
        ok = home | ((d <= radius).all(-1) & inside)  # (L, N)
        dist = torch.where(ok, d.pow(2).sum(-1), torch.full_like(d[..., 0], float("inf")))  # (L, N)
        best, owner = dist.min(dim=1)  # (L,)
        free = torch.isfinite(best)
        if valid is not None:
            free &= valid[b].cpu()
        free[rows] = False
        idx = torch.nonzero(free).flatten()
        out.append((torch.cat([rows, idx]), torch.cat([cols, owner[idx]])))
    return out


def _centre_cell(matches: list[Match], cells: Tensor, targets: list[dict], valid: Tensor | None,
                 radius: float) -> list[Match]:
    return centre_cell_positives(matches, cells, targets, valid)  # radius does not apply


def _centre_region(matches: list[Match], cells: Tensor, targets: list[dict], valid: Tensor | None,
                   radius: float) -> list[Match]:
    return centre_region_positives(matches, cells, targets, radius, valid)


# ``loss.extra_positives`` name -> fn(matches, cells (L, 4), targets, valid (B, L) | None, radius) -> matches
EXTRA_POSITIVES: dict[str, Callable[..., list[Match]] | None] = {
    "none": None,
    "centre_cell": _centre_cell,
    "centre_region": _centre_region,
}
