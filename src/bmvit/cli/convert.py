"""``bmvit convert``: turn a PySlowFast / torchvision MViTv2 checkpoint into a bmvit backbone file.

The output is a ``.safetensors`` file in bmvit's key layout (classification head dropped) that
``model.pretrained`` accepts. With ``--config`` the weights are also fitted to that config's
backbone (relative-position tables resized to its input size / pooling) and must cover it.
The source is read with ``torch.load(weights_only=True)``: files holding arbitrary pickled
objects are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from bmvit.errors import CheckpointError, ConfigError, OutputError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a PySlowFast/torchvision MViTv2 checkpoint to bmvit safetensors")
    p.add_argument("src", metavar="SRC", help="checkpoint file (.pyth / .pth / .pt / .safetensors)")
    p.add_argument("--from", dest="source", required=True, choices=("slowfast", "torchvision"),
                   help="layout of SRC: PySlowFast (weights under model_state) or torchvision mvit_v2_s")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--config", help="fit the weights to this config's backbone (input size, last-pool removal)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value",
                   help="config override for the fitted backbone, repeatable (e.g. --set data.size=256)")
    p.set_defaults(func=run)


def run(args) -> int:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from bmvit.atomic import atomic_output, output_error

    from bmvit.models.checkpoints.mvit import convert, detect_format, read_checkpoint

    dst = Path(args.out)
    if dst.suffix.lower() != ".safetensors":  # model.pretrained reads a file by its suffix: a .pth would be torch.load-ed
        raise OutputError(f"--out {dst}: convert writes a safetensors file; name it "
                          f"{dst.with_suffix('.safetensors').name if dst.suffix else dst.name + '.safetensors'}")
    sd, fmt = read_checkpoint(args.src, args.source)
    found = detect_format(sd)
    if found is not None and found != fmt:  # the other layout's keys would all be dropped as unexpected
        key = next(k for k in sd if k.removeprefix("module.").startswith(("conv_proj.", "pos_encoding.", "patch_embed.")))
        todo = "it is already a bmvit backbone (model.pretrained reads it)" if found == "bmvit" else f"use --from {found}"
        raise CheckpointError(f"{args.src}: the keys are in the {found} layout (e.g. '{key}'), not {fmt}: {todo}")
    target = None
    if args.config or args.overrides:
        from bmvit.config import load_config
        from bmvit.models.build import BACKBONES
        from bmvit.models.mvit import MViT

        cfg = load_config(args.config, args.overrides)
        target = BACKBONES[cfg.model.backbone](cfg.model, (cfg.data.num_frames, cfg.data.size, cfg.data.size))
        if not isinstance(target, MViT):  # MViT weights "fitted" to a Hiera / ViT kept the few names they share
            raise ConfigError(f"model.backbone={cfg.model.backbone}: convert fits MViTv2 checkpoints to an MViT "
                              "backbone; Hiera and VideoMAE checkpoints go straight into model.pretrained")
    try:
        out = convert(sd, fmt, target)
    except CheckpointError as e:  # a shape that does not fit the configured backbone names the key, not the file
        raise CheckpointError(f"{args.src}: {e}") from None
    report = out.report
    if target is not None and report.missing:
        raise CheckpointError(f"{args.src}: lacks {len(report.missing)} weights of the configured backbone, "
                              f"e.g. {', '.join(report.missing[:4])}")
    if not out:
        raise CheckpointError(f"{args.src}: no MViTv2 weights recognized in the {args.source} layout")
    tensors = {k: v.detach().contiguous().clone() for k, v in out.items()}
    meta = {"format": "bmvit-mvit-backbone", "source_format": args.source, "source_file": Path(args.src).name,
            "report": json.dumps(report.to_dict())}
    with atomic_output(dst) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # safetensors reports I/O failures as its own error
            raise output_error(dst, OSError(str(e))) from None
    print(report)
    print(f"wrote {dst} ({len(tensors)} tensors)")
    return 0
