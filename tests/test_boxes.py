import pytest
import torch

from bmvit.boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou, nms, xyxy_to_cxcywh


def test_format_round_trip():
    b = torch.rand(10, 4)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-6)
    assert torch.allclose(xyxy_to_cxcywh(torch.tensor([[0.1, 0.2, 0.5, 0.8]])), torch.tensor([[0.3, 0.5, 0.4, 0.6]]))


@pytest.mark.parametrize(
    "a, b, expected",
    [
        # identical boxes: IoU 1, enclosing = union
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),
        # half overlap: inter 2, union 6, enclosing 3x2=6 -> 1/3
        ([0, 0, 2, 2], [1, 0, 3, 2], 1 / 3),
        # disjoint side by side with a gap: inter 0, union 2, enclosing 3x1=3 -> 0 - (3-2)/3
        ([0, 0, 1, 1], [2, 0, 3, 1], -1 / 3),
        # diagonal: inter 0, union 2, enclosing 2x2=4 -> -(4-2)/4
        ([0, 0, 1, 1], [1, 1, 2, 2], -0.5),
        # nested: inter 1, union 4, enclosing 4 -> 1/4
        ([0, 0, 2, 2], [0.5, 0.5, 1.5, 1.5], 0.25),
    ],
)
def test_giou_hand_computed(a, b, expected):
    g = generalized_box_iou(torch.tensor([a], dtype=torch.float), torch.tensor([b], dtype=torch.float))
    assert g.shape == (1, 1)
    assert g.item() == pytest.approx(expected, abs=1e-6)


def test_giou_pairwise_shape_and_symmetry():
    a = cxcywh_to_xyxy(torch.rand(5, 4) * 0.5 + 0.1)
    b = cxcywh_to_xyxy(torch.rand(3, 4) * 0.5 + 0.1)
    g = generalized_box_iou(a, b)
    assert g.shape == (5, 3)
    assert torch.allclose(g, generalized_box_iou(b, a).T)
    assert (g <= 1).all() and (g >= -1).all()
    assert (g <= box_iou(a, b)[0] + 1e-6).all()


def test_nms_keeps_best_of_overlapping():
    boxes = torch.tensor([[0, 0, 1, 1], [0.05, 0, 1.05, 1], [2, 2, 3, 3.0]])
    scores = torch.tensor([0.5, 0.9, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
