"""Boxes stay on their pixels through every transform: resize, flip, keep-aspect, jitter, padding;
the device half (normalize_clips) equals the former all-CPU float transform."""

import numpy as np
import pytest
import torch
from data_fixtures import unnormalize
from PIL import Image

from bmvit.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from bmvit.data.collate import pad_collate
from bmvit.data.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    ClipTransform,
    batch_colour,
    jitter_boxes,
    normalize_clips,
    resize_frames,
)

BOX = torch.tensor([[0.15, 0.25, 0.45, 0.8]])  # normalized xyxy


def _decoded(t: ClipTransform, w=120, h=80, frames=4) -> torch.Tensor:
    """(T, h', w', 3) uint8: frames with a white rectangle at BOX, decoded through ``t.decode_resize``."""
    im = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = (BOX[0] * torch.tensor([w, h, w, h])).round().int().tolist()
    im[y1:y2, x1:x2] = 255
    arr = t.decode_resize(im[None])[0]
    return torch.stack([arr] * frames)


def _white_box(clip: torch.Tensor) -> torch.Tensor:
    """Normalized xyxy of the white pixels of the first frame of a clip."""
    fr = unnormalize(clip)[0, :, :, 0]
    ys, xs = np.nonzero(fr > 150)
    h, w = fr.shape
    return torch.tensor([[xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]], dtype=torch.float32)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_square_resize_and_flip(flip):
    t = ClipTransform(size=64, train=True, hflip_prob=flip)
    clip, boxes, _, _ = t(_decoded(t), BOX.clone(), torch.ones(1, 2), seed=0)
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
    clip, boxes, _, _ = t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)
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
        clip, boxes, _, _ = t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)
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
        clip, boxes, labels, _ = t(_decoded(t), BOX.clone(), torch.ones(1, 2), seed=seed)
        items.append((clip, {"boxes": xyxy_to_cxcywh(boxes), "labels": labels}))
    clips, targets = pad_collate(items, multiple=16)
    assert clips.shape[-2] % 16 == 0 and clips.shape[-1] % 16 == 0
    for i, tg in enumerate(targets):
        assert tg["image_size"] == tuple(items[i][0].shape[-2:])
        assert box_iou(_white_box(clips[i]), cxcywh_to_xyxy(tg["boxes"]))[0].item() > 0.85


def _old_cpu_transform(frames, seed, jitter=0.4):
    """The former all-CPU float path (flip, colour jitter, normalization) as a reference."""
    gen = torch.Generator().manual_seed(seed)

    def r():
        return float(torch.rand((), generator=gen))
    x = frames.permute(3, 0, 1, 2).float() / 255
    if r() < 0.5:
        x = x.flip(-1)
    b, c, s = (1 + (2 * r() - 1) * jitter for _ in range(3))
    g = x.mean(0, keepdim=True)
    x = g + (x - g) * s
    x = ((x - x.mean()) * c + x.mean()) * b
    return (x.clamp(0, 1) - 0.45) / 0.225


def test_device_colour_jitter_equals_former_cpu_transform():
    """uint8 clip + colour factors from the loader, jitter + normalization in normalize_clips: equal to
    the former float CPU transform within 1e-5 (float32 rounding), same random draws."""
    frames = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    t = ClipTransform(size=16, train=True, hflip_prob=0.5, color_jitter=0.4)
    items = []
    for seed in range(3):
        clip, _, _, colour = t(frames, BOX.clone(), torch.ones(1, 2), seed=seed)
        assert clip.dtype == torch.uint8 and clip.shape == (3, 4, 16, 16)
        items.append((clip, {"colour": colour}))
        got = normalize_clips(clip[None], t.mean, t.std, colour=colour[None])[0]
        torch.testing.assert_close(got, _old_cpu_transform(frames, seed), atol=1e-5, rtol=0)
    from bmvit.data.collate import collate_square

    clips, targets = collate_square(items)  # batched: the same per clip
    got = normalize_clips(clips, t.mean, t.std, targets, batch_colour(targets))
    for seed in range(3):
        torch.testing.assert_close(got[seed], _old_cpu_transform(frames, seed), atol=1e-5, rtol=0)
    plain = ClipTransform(size=16)
    clip, _, _, colour = plain(frames, BOX.clone(), torch.ones(1, 2))
    assert batch_colour([{"colour": colour}]) is None  # evaluation: no jitter work on the device
    want = (frames.permute(3, 0, 1, 2).float() / 255 - 0.45) / 0.225
    torch.testing.assert_close(normalize_clips(clip[None], plain.mean, plain.std)[0], want, atol=1e-5, rtol=0)


def test_padded_batch_normalizes_each_valid_region_and_zeroes_padding():
    t = ClipTransform(size=16, train=True, color_jitter=0.4)
    a = torch.randint(0, 256, (2, 16, 24, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 20, 12, 3), dtype=torch.uint8)
    items, singles = [], []
    for k, fr in enumerate((a, b)):
        clip, boxes, labels, colour = t(fr, BOX.clone(), torch.ones(1, 2), seed=k)
        items.append((clip, {"boxes": xyxy_to_cxcywh(boxes), "labels": labels, "colour": colour}))
        singles.append(normalize_clips(clip[None], t.mean, t.std, colour=colour[None])[0])
    clips, targets = pad_collate(items, multiple=16)
    got = normalize_clips(clips, t.mean, t.std, targets, batch_colour(targets))
    for k, tg in enumerate(targets):
        h, w = tg["image_size"]
        torch.testing.assert_close(got[k, :, :, :h, :w], singles[k], atol=1e-5, rtol=0)
        assert float(got[k].abs().sum()) == pytest.approx(float(singles[k].abs().sum()), rel=1e-5)  # zeros elsewhere


def test_resize_frames_is_within_two_levels_of_pillow():
    """The stated tolerance of the vectorized uint8 resize against Pillow's bilinear resize (the former one)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 71, 3), dtype=np.uint8)
    frames = np.stack([np.asarray(Image.fromarray(base).resize((568, 320), Image.BICUBIC))] * 2)
    frames[1] = 255 - frames[1]
    got = resize_frames(frames, (256, 256)).numpy()
    want = np.stack([np.asarray(Image.fromarray(f).resize((256, 256), Image.BILINEAR)) for f in frames])
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == (2, 256, 256, 3) and got.dtype == np.uint8 and diff.max() <= 2 and diff.mean() < 0.2


def test_time_jitter_shifts_training_clips_only_and_leaves_the_other_draws():
    """data.time_jitter: shifts in [-j, j], all of them drawn, a pure function of the seed; no shift
    in evaluation, without a seed or at j = 0; flips and colour factors are those without it."""
    t = ClipTransform(size=16, train=True, time_jitter=2, hflip_prob=0.5, color_jitter=0.3)
    shifts = [t.time_shift(s) for s in range(400)]
    assert set(shifts) == {-2, -1, 0, 1, 2}
    assert shifts == [t.time_shift(s) for s in range(400)]
    assert ClipTransform(size=16, train=False, time_jitter=2).time_shift(3) == 0
    assert t.time_shift(None) == 0 and ClipTransform(size=16, train=True).time_shift(3) == 0
    plain = ClipTransform(size=16, train=True, hflip_prob=0.5, color_jitter=0.3)
    frames, boxes, labels = torch.zeros(4, 16, 16, 3, dtype=torch.uint8), torch.tensor([[0.1, 0.2, 0.5, 0.9]]), torch.ones(1, 2)
    for s in range(20):
        a, b = t(frames, boxes, labels, s), plain(frames, boxes, labels, s)
        assert torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])


def test_time_jitter_moves_the_clip_along_the_video(tmp_path):
    """The reader decodes, for a seed, the unshifted clip's frame numbers plus time_shift(seed)."""
    from inference_fixtures import tiny_config, write_dataset

    from bmvit.data.build import make_dataset

    root = write_dataset(tmp_path / "data", seconds=4)
    ds = make_dataset(tiny_config(root, extra=["data.time_jitter=3"]), "train", augment=True)
    read, asked = ds.source.read, []

    def spy(video, frames, *a, **kw):
        asked.append(np.asarray(frames).copy())
        return read(video, frames, *a, **kw)

    ds.source.read = spy
    kf = ds.keyframes[0]
    centred = ds.frame_indices(kf.video_id, kf.timestamp)
    shifts = set()
    for seed in range(12):
        ds[(0, seed)]
        shift = ds.transform.time_shift(seed)
        shifts.add(shift)
        assert np.array_equal(asked[-1], np.clip(centred + shift, 1, ds.num_video_frames(kf.video_id)))
    ds[0]  # no seed (evaluation order): the centred clip
    assert np.array_equal(asked[-1], centred) and len(shifts) > 1


def test_normalize_is_the_same_for_the_loaders_channels_last_batches_and_contiguous_ones():
    """The loader's batches are (B, 3, T, H, W) views of (B, T, H, W, 3) memory; the device half
    gives them exactly the values of the same clips laid out row-major, contiguous."""
    raw = torch.randint(0, 256, (3, 4, 10, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    view = raw.permute(0, 4, 1, 2, 3)  # what collate_square returns
    colour = torch.tensor([[1.1, 0.9, 1.2], [1.0, 1.0, 1.0], [0.85, 1.15, 0.8]])
    for c in (None, colour):
        a = normalize_clips(view, KINETICS_MEAN, KINETICS_STD, colour=c)
        b = normalize_clips(view.contiguous(), KINETICS_MEAN, KINETICS_STD, colour=c)
        assert a.is_contiguous() and torch.equal(a, b)
