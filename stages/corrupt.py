"""Stage `corrupt`: the robustness suite's images, made once from the test set.

A fixed subset of the test set (corruptions.SUITE_SIZE images, corruptions.SUITE_SEED), each image
corrupted by each of corruptions.CORRUPTIONS, saved as 8-bit pixels with the subset's labels and its
indices in the test set. The images depend only on the test set and the corruptions' code, so DVC makes
them once and every experiment's `evaluate` scores the same ones.
"""

from __future__ import annotations

import argparse

import torch

from stages import cli, corruptions, idx, paths


def make_suite(*, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'indices', 'labels', and each corruption's name: uint8 (N, 28, 28)} from uint8 images (M, 28, 28)."""
    chosen = corruptions.subset(len(images))
    pixels = images[chosen].float().div(255)[:, None]
    suite = {"indices": chosen, "labels": labels[chosen]}
    for name in corruptions.CORRUPTIONS:
        suite[name] = (corruptions.corrupt(pixels, name) * 255).round().to(torch.uint8)[:, 0]
    return suite


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.corrupt", reads=[f"{paths.RAW_DIR}/ (the test images)"],
                      writes=[f"{paths.SUITE} ({len(corruptions.CORRUPTIONS)} corruptions of "
                              f"{corruptions.SUITE_SIZE} test images)"])


def main(args: argparse.Namespace) -> None:
    images, labels = idx.load_split(paths.RAW_DIR, "test")
    suite = make_suite(images=images, labels=labels)
    corruptions.save_suite(suite, paths.SUITE)
    print(f"{len(corruptions.CORRUPTIONS)} corruptions of {len(suite['labels'])} test images -> {paths.SUITE}")


if __name__ == "__main__":
    cli.run(main, parser())
