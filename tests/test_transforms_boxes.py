"""Boxes stay on their pixels through every transform: resize, flip, keep-aspect, jitter, padding."""

import numpy as np
import pytest
import torch
from data_fixtures import unnormalize
from PIL import Image

from bmvit.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from bmvit.data.collate import pad_collate
from bmvit.data.transforms import ClipTransform, jitter_boxes

BOX = torch.tensor([[0.15, 0.25, 0.45, 0.8]])  # normalized xyxy


def _decoded(t: ClipTransform, w=120, h=80, frames=4) -> torch.Tensor:
    """(T, h', w', 3) uint8: frames with a white rectangle at BOX, decoded through ``t.decode_resize``."""
    im = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = (BOX[0] * torch.tensor([w, h, w, h])).round().int().tolist()
    im[y1:y2, x1:x2] = 255
    arr = np.asarray(t.decode_resize(Image.fromarray(im)))
    return torch.from_numpy(np.stack([arr] * frames))


def _white_box(clip: torch.Tensor) -> torch.Tensor:
    """Normalized xyxy of the white pixels of the first frame of a normalized clip."""
    fr = unnormalize(clip)[0, :, :, 0]
    ys, xs = np.nonzero(fr > 150)
    h, w = fr.shape
    return torch.tensor([[xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]], dtype=torch.float32)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_square_resize_and_flip(flip):
    t = ClipTransform(size=64, train=True, hflip_prob=flip)
    clip, boxes, _ = t(_decoded(t), BOX.clone(), torch.ones(1, 2), seed=0)
    assert clip.shape == (3, 4, 64, 64)
    iou = box_iou(_white_box(clip), boxes)[0]
    assert iou.item() > 0.9
    if flip:
        torch.testing.assert_close(boxes, torch.tensor([[0.55, 0.25, 0.85, 0.8]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_aspect_random_short_side(seed):
    t = ClipTransform(size=32, train=True, hflip_prob=0.5, resize="keep_aspect", short_side=(24, 40))
    frames = _decoded(t)  # decoded at short side 40: 60 x 40
    assert frames.shape[1:3] == (40, 60)
    clip, boxes, _ = t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)
    h, w = clip.shape[-2:]
    assert 24 <= h <= 40 and abs(w / h - 1.5) < 0.05  # aspect kept
    assert box_iou(_white_box(clip), boxes)[0].item() > 0.85
    ev = ClipTransform(size=32, resize="keep_aspect")
    assert ev(_decoded(ev), BOX.clone(), torch.ones(1, 2))[0].shape[-2:] == (32, 48)


def test_box_jitter_stays_near_the_pixels_and_in_the_frame():
    t = ClipTransform(size=64, train=True, box_jitter=0.05)
    frames = _decoded(t)
    ious = []
    for seed in range(20):
        clip, boxes, _ = t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)
        assert not torch.equal(boxes, BOX)
        ious.append(box_iou(_white_box(clip), boxes)[0].item())
    assert min(ious) > 0.8 and np.mean(ious) < 0.99  # moved, but still on the actor
    a = t(frames, BOX.clone(), torch.ones(1, 2), seed=3)[1]
    b = t(frames, BOX.clone(), torch.ones(1, 2), seed=3)[1]
    assert torch.equal(a, b)  # a function of the seed
    edge = torch.tensor([[0.0, 0.0, 0.001, 1.0], [0.999, 0.5, 1.0, 0.6]])
    out = jitter_boxes(edge, 0.5, torch.rand(2, 4, generator=torch.Generator().manual_seed(0)))
    assert (out >= 0).all() and (out <= 1).all() and (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()


def test_pad_collate_keeps_boxes_on_pixels():
    t = ClipTransform(size=32, train=True, resize="keep_aspect", short_side=(24, 40))
    items = []
    for seed in (0, 5):
        clip, boxes, labels = t(_decoded(t), BOX.clone(), torch.ones(1, 2), seed=seed)
        items.append((clip, {"boxes": xyxy_to_cxcywh(boxes), "labels": labels}))
    clips, targets = pad_collate(items, multiple=16)
    assert clips.shape[-2] % 16 == 0 and clips.shape[-1] % 16 == 0
    for i, tg in enumerate(targets):
        assert tg["image_size"] == tuple(items[i][0].shape[-2:])
        assert box_iou(_white_box(clips[i]), cxcywh_to_xyxy(tg["boxes"]))[0].item() > 0.85


def test_fused_colour_jitter_matches_reference_formula():
    frames = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    t = ClipTransform(size=16, train=True, hflip_prob=0.5, color_jitter=0.4)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)

        def r(gen=gen):
            return float(torch.rand((), generator=gen))
        x = frames.permute(3, 0, 1, 2).float() / 255
        if r() < 0.5:
            x = x.flip(-1)
        b, c, s = (1 + (2 * r() - 1) * 0.4 for _ in range(3))
        g = x.mean(0, keepdim=True)
        x = g + (x - g) * s
        x = ((x - x.mean()) * c + x.mean()) * b
        want = (x.clamp(0, 1) - 0.45) / 0.225
        torch.testing.assert_close(t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)[0], want, atol=1e-5, rtol=0)
