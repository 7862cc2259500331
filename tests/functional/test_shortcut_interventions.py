"""Fixed regions: deciding most predictions, or clear wins for a mark read beside the object, on models whose reliance is known."""

from __future__ import annotations

from lightning_xai.functional.shortcut_interventions import region_votes
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
