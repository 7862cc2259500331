"""Fixed regions: deciding most predictions, or clear wins for a mark read beside the object, on models whose reliance is known."""

from __future__ import annotations

import torch

from lightning_xai.functional import shortcut_interventions as interventions_module
from lightning_xai.functional.shortcut_interventions import MIN_DONORS, Bench, class_votes, region_votes
from tests.functional.test_shortcut_moving import (
    CORNERS,
    ReadsCentredObject,
    ReadsObjectAndCornerMark,
    _objects_with_corner_marks,
    _with_heat,
)


def test_a_fixed_mark_read_beside_the_object_wins_clearly_without_deciding_most_predictions():
    images, _ = _objects_with_corner_marks(corners=[CORNERS[0]])
    bench = _with_heat(ReadsObjectAndCornerMark(), images)
    decides = region_votes(bench, CORNERS[0], alpha=1e-4)
    assert not decides.decided and decides.stay > decides.follow  # the object still decides most predictions
    clear = region_votes(bench, CORNERS[0], alpha=1e-4, clear_wins=True)
    assert clear.decided and clear.p_value <= 1e-4 / 2 and clear.wins > 3 * clear.losses


def test_clear_wins_stay_silent_where_a_clean_model_does_not_look():
    images, _ = _objects_with_corner_marks(marked=False)
    bench = _with_heat(ReadsCentredObject(), images)
    noise = region_votes(bench, CORNERS[0], alpha=1e-4, clear_wins=True)  # the corner holds noise
    assert not noise.decided and noise.wins <= noise.losses


def test_the_most_telling_piece_of_a_centred_object_wins_clearly_too_but_does_not_decide():
    images, _ = _objects_with_corner_marks(marked=False)
    bench = _with_heat(ReadsCentredObject(), images)
    piece = (12, 12, 18, 18)  # why clear wins are only asked of spots at the border (see spot_at_border)
    assert not region_votes(bench, piece, alpha=1e-4).decided
    clear = region_votes(bench, piece, alpha=1e-4, clear_wins=True)
    assert clear.decided and clear.stay > 10 * clear.follow  # it beats other pieces, yet the prediction stays


class _OneImageOfClassZeroFlipsEverything(torch.nn.Module):
    """Class 1, unless the top-left 4x4 box is bright: then class 0 (a one-class model, as a young one is)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, 0, 0:4, 0:4].mean(dim=(1, 2))
        return torch.stack([40 * (level - 0.5), torch.zeros(len(x))], dim=1)


def _counted_one_per_unit(monkeypatch) -> None:
    """Lifts the bound on independent groups: every outcome counts (as before stop 31)."""
    monkeypatch.setattr(Bench, "groups", lambda self, units: 10**6)


def test_a_place_that_one_donor_image_confirms_is_not_tested(monkeypatch):
    images = torch.rand(96, 1, 16, 16) * 0.3
    images[0, 0, 0:4, 0:4] = 1.0  # the one image of class 0
    bench = Bench.build(_OneImageOfClassZeroFlipsEverything(), images, seed=0, batch_size=96, fill="mean")
    assert int((bench.predicted == 0).sum()) == 1 and MIN_DONORS > 1
    votes = region_votes(bench, (0, 0, 4, 4), alpha=1e-4)
    assert not votes.decided and votes.trials == 0  # no recipient has a donor from enough images
    assert not class_votes(bench, (0, 0, 4, 4), 0, alpha=1e-4).decided
    monkeypatch.setattr(interventions_module, "MIN_DONORS", 1)  # one image's corner, in every recipient
    votes = region_votes(bench, (0, 0, 4, 4), alpha=1e-4)
    assert not votes.decided and votes.trials == 0 and votes.groups == bench.groups(bench.test) <= 2
    _counted_one_per_unit(monkeypatch)
    assert region_votes(bench, (0, 0, 4, 4), alpha=1e-4).decided  # one image's evidence, counted 64 times


def test_a_place_that_a_few_images_outside_the_largest_class_hold_is_the_evidence_of_those_few(monkeypatch):
    # Enough donors of class 0 (MIN_DONORS), and every transplant, either way, turns on one of them.
    images = torch.rand(96, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.3
    few = torch.arange(0, 96, 16)  # six images of class 0, spread over both halves
    images[few, 0, 0:4, 0:4] = 1.0
    bench = Bench.build(_OneImageOfClassZeroFlipsEverything(), images, seed=0, batch_size=96, fill="mean")
    in_test = int(torch.isin(bench.test, few).sum())
    assert 0 < in_test < 6 and bench.groups(bench.test) == 6 + in_test  # as partners, and as recipients
    for clear_wins in (False, True):
        votes = region_votes(bench, (0, 0, 4, 4), alpha=1e-4, clear_wins=clear_wins)
        assert not votes.decided and votes.trials == 0 and votes.groups == 6 + in_test  # cannot reach 5e-5
    class_mark = class_votes(bench, (0, 0, 4, 4), 0, alpha=1e-4)
    assert not class_mark.decided and class_mark.groups == bench.groups(bench.test[bench.predicted[bench.test] != 0])
    _counted_one_per_unit(monkeypatch)
    votes = region_votes(bench, (0, 0, 4, 4), alpha=1e-4)
    assert votes.decided and votes.wins >= 0.9 * votes.compared  # counted one per recipient
    assert class_votes(bench, (0, 0, 4, 4), 0, alpha=1e-4).decided
