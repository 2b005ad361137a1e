"""Weight schedulers and learning-rate halving rules, on scripted sequences."""

from __future__ import annotations

import pytest

from scheduler import (
    AddWeightLoss,
    DummyScheduler,
    PlateauHalving,
    StealWeight,
    get_scheduler,
    original_halving,
)


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
