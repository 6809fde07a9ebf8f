"""Loading a trained checkpoint and scoring images with it (evaluate, plots, predict)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stages import paths
from stages.errors import StageError
from stages.model import Net

EVAL_BATCH = 500  # images per forward pass when scoring; on a CPU 500 ran 5,000 images in 0.6 s, 2,000 in 0.9 s


def load_checkpoint(path: Path, device: torch.device) -> tuple[Net, dict[str, Any]]:
    """Net in eval mode on `device` with the weights of `path`, and the checkpoint's metadata.

    The pipeline's own model (paths.MODEL) gets the pipeline's next step in each error; a file the
    user named gets none: it is theirs to fix.
    """
    ours = Path(path) == paths.MODEL
    fix = f"; restore it with `dvc checkout {paths.MODEL}`, or train it again with `dvc repro train`" if ours else ""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        missing = "missing (run `dvc repro train` first)" if ours else "no such file"
        raise StageError(f"{path}: {missing}") from None
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc):
            raise StageError(f"{path}: not a readable checkpoint (truncated or damaged){fix}") from None
        # weights_only refused an object that would run code when loaded (PyTorch's message then advises
        # loading it unsafely: that advice is left out on purpose).
        raise StageError(f"{path}: not a checkpoint written by `stages.train`: it holds objects other than "
                         f"tensors and plain values, so it was refused without running anything{fix}") from None
    except Exception as exc:  # a damaged file can fail anywhere in the unpickler, with any exception
        # PyTorch's first sentence says what failed; the rest is advice about how files get damaged.
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"{path}: not a readable checkpoint (truncated or not written by "
                         f"`stages.train`: {reason}){fix}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise StageError(f"{path}: not a checkpoint of this project (no 'state_dict' entry){fix}")
    model = Net()
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise StageError(f"{path}: holds weights of a different architecture than stages.model.Net: "
                         f"{first[1].strip() if len(first) > 1 else first[0]}{fix}") from None
    return model.to(device).eval(), {k: v for k, v in checkpoint.items() if k != "state_dict"}


@torch.inference_mode()
def logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Class scores (N, 10) of normalized images (N, 1, 28, 28), in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


# Test-time augmentation in evaluate and predict: softmax averaged over each image and its four one-pixel
# shifts, chosen on the hold-out (+0.053 ± 0.027 points over the same models without it, six seeds;
# bench/results/zen5-2026-12-02). MNIST's 28x28 frame has a blank border, so a roll only moves blank pixels
# around the edge. Training's validation scores the image alone: it picks the epoch, not the answer.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def probabilities(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, 10) of normalized images (N, 1, 28, 28), averaged over TTA_SHIFTS, in float32."""
    total = sum(logits(model, torch.roll(images, shift, dims=(2, 3))).float().softmax(1) for shift in TTA_SHIFTS)
    return total / len(TTA_SHIFTS)


def score(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy as a fraction, mean negative log-likelihood) of `model` on a labelled set."""
    out = logits(model, images)
    loss, correct = F.cross_entropy(out, labels).item(), int((out.argmax(1) == labels).sum())
    return correct / len(labels), loss


def score_weights(state: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """`score` of a Net holding the weights `state` (e.g. a training Result's saved_state), on images' device."""
    model = Net().to(images.device)
    model.load_state_dict(state)
    return score(model, images, labels)
