"""Weight schedulers and learning-rate halving rules, on scripted sequences."""

from __future__ import annotations

import pytest

from boundary_loss.losses.weight_schedules import (
    AddWeightLoss,
    DummyScheduler,
    StealWeight,
    get_scheduler,
)
from boundary_loss.training.lr_schedule import PlateauHalving, original_halving


def test_steal_weight_moves_weight_and_floors_at_0_1():
    steal = StealWeight(to_steal=0.3)
    weights = [[1.0, 0.01]]
    history = []
    for epoch in range(4):
        weights = steal(epoch, weights)
        history.append(weights[0])
    # 1 -> 0.7 -> 0.4 -> 0.1 (0.1 floor) -> 0.1; the second gains 0.3 each epoch regardless
    assert history == [
        pytest.approx([0.7, 0.31]),
        pytest.approx([0.4, 0.61]),
        pytest.approx([0.1, 0.91]),
        pytest.approx([0.1, 1.21]),
    ]


def test_add_weight_loss_adds_per_loss_and_per_loader():
    add = AddWeightLoss(to_add=[0, 0.01])
    assert add(0, [[1, 0.01], [1, 0.5]]) == [pytest.approx([1, 0.02]), pytest.approx([1, 0.51])]
    with pytest.raises(ValueError, match="has 2 values for 3 losses"):
        add(0, [[1, 1, 1]])


def test_dummy_keeps_weights_and_returns_a_copy():
    weights = [[1.0, 2.0]]
    out = DummyScheduler()(0, weights)
    assert out == weights and out[0] is not weights[0]


def test_registry_and_bad_parameters():
    assert isinstance(get_scheduler("StealWeight", {"to_steal": 0.01}), StealWeight)
    with pytest.raises(ValueError, match="unknown --scheduler 'Steal'.*StealWeight"):
        get_scheduler("Steal", {})
    with pytest.raises(ValueError, match="do not fit StealWeight"):
        get_scheduler("StealWeight", {"to_add": 1})
    with pytest.raises(ValueError, match="non-negative"):
        StealWeight(to_steal=-1)
    with pytest.raises(ValueError, match="exactly two losses"):
        StealWeight(0.1)(0, [[1.0]])


def test_plateau_halves_after_20_epochs_without_improvement_then_restarts():
    plateau = PlateauHalving(patience=20)
    improved = [True] + [False] * 45
    halvings = [epoch for epoch, imp in enumerate(improved) if plateau.step(imp)]
    assert halvings == [20, 40]
    restored = PlateauHalving()
    restored.load_state_dict(plateau.state_dict())
    assert restored.since_best == plateau.since_best == 5


def test_original_rule_halves_right_after_epoch_0_as_the_original():
    # best epoch stays 0: halvings at epochs 0, 20, 40; with best epoch 5: 0, 25, 50
    assert [e for e in range(50) if original_halving(e, 0)] == [0, 20, 40]
    assert [e for e in range(60) if original_halving(e, 5)] == [0, 25, 50]


# ---------------------------------------------------------------------------------------------
# The adjacency penalty's automatic weight (Ganaye et al., MICCAI 2018)
# ---------------------------------------------------------------------------------------------


def test_lambda_controller_follows_its_rules_on_a_scripted_sequence():
    from boundary_loss.losses.weight_schedules import LambdaController

    controller = LambdaController(fraction=0.1, factor=2, every=2, tolerance=0.01)
    weights = [[1.0, 1.0]]
    # epoch 0: segmentation term 0.8, penalty 0.02 -> weight 0.1 * 0.8 / 0.02 = 4
    weights = controller(0, weights, {"val_dice": 0.50, "tra_losses": [[0.8, 0.02]]})
    assert weights == [[1.0, pytest.approx(4.0)]]
    script = [
        # (val_dice, nan, expected weight after the epoch)
        (0.52, False, 4.0),  # 1 epoch since the last change: hold
        (0.55, False, 8.0),  # 2 epochs and Dice holds: raise
        (0.545, False, 8.0),  # within tolerance of the best (0.55): hold
        (0.50, False, 4.0),  # dropped below 0.55 - 0.01: back off
        (0.56, False, 4.0),  # count restarted: hold
        (None, True, 2.0),  # NaN in training: back off
        (0.57, False, 2.0),
        (0.58, False, 4.0),  # two good epochs: raise
    ]
    for epoch, (dice, nan, expected) in enumerate(script, start=1):
        metrics = {"nan": True} if nan else {"val_dice": dice, "tra_losses": [[0.5, 0.1]]}
        weights = controller(epoch, weights, metrics)
        assert weights == [[1.0, pytest.approx(expected)]], f"epoch {epoch}"


def test_lambda_controller_state_round_trips_and_checks_arguments():
    from boundary_loss.losses.weight_schedules import LambdaController

    a = LambdaController(every=3)
    a(0, [[1, 1]], {"val_dice": 0.4, "tra_losses": [[1, 1]]})
    a(1, [[1, 1]], {"val_dice": 0.6, "tra_losses": [[1, 1]]})
    b = LambdaController(every=3)
    b.load_state_dict(a.state_dict())
    assert (
        b.state_dict()
        == a.state_dict()
        == {
            "best_dice": 0.6,
            "since_change": 1,
            "started": True,
        }
    )
    with pytest.raises(ValueError, match="factor > 1"):
        LambdaController(factor=1)
