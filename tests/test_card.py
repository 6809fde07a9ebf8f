"""The model card says what the figures it is given say, limits included."""

from __future__ import annotations

from stages import card, config
from tests.helpers import REPO


def test_the_card_names_the_recipe_the_weak_corruptions_and_the_weakest_digit() -> None:
    params = config.load(REPO / "params.yaml").model_dump()
    checkpoint = {"epoch": 12, "val_accuracy": 0.9938, "params": params}
    test = {"accuracy": 0.9955, "one_pass": 0.9949, "errors": 45, "one_pass_errors": 51}
    robustness = {"mean": 0.9015, "held_out": 0.8325, "worst": 0.215, "clean": 0.995, "stripe": 0.215,
                  "fog": 0.97, "zigzag": 0.881}
    per_class = [{"digit": str(d), "accuracy": 0.985 if d == 9 else 0.996} for d in range(10)]
    text = card.model_card(checkpoint=checkpoint, test=test, robustness=robustness, per_class=per_class,
                           n_test=10_000, suite_size=1_000)
    assert "| 99.55 % | 45 |" in text and "| 99.49 % | 51 |" in text
    assert "the held-out group (corruptions no training augmentation makes: stripe, fog, zigzag) 83.25 %." in text
    assert "Under these corruptions it reads fewer than 90.00 %: stripe 21.50 %, zigzag 88.10 %." in text
    assert "The weakest digit is 9, at 98.50 % on the test set." in text
    assert f"epoch 12, chosen on the\n  hold-out ({params['train']['selection']}), where they read 99.38 %" in text
    assert f"{params['train']['optimizer']} (lr {params['train']['lr']}, {params['train']['schedule']})" in text
    assert "it makes 51 errors on the test set where\n  the shifts make 45." in text
