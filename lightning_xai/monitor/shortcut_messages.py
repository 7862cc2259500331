"""Every shortcut finding in words, with its evidence (the ``message`` of a
:class:`~lightning_xai.shortcuts.Finding`)."""

from __future__ import annotations

from lightning_xai.functional.shortcut import Box, as_box
from lightning_xai.functional.shortcut_candidates import describe_place, describe_places
from lightning_xai.functional.shortcut_moving import MOVING_DEAD_ZONE
from lightning_xai.shortcuts import Finding

__all__ = ["finding_message", "outlined_again_message"]


def finding_message(finding: Finding, size: tuple[int, int], places: list[Box] | None, margin: float) -> str:
    """The finding in words, with its evidence. ``places``: a moving region's places (``None``: its box alone);
    ``margin``: ``Shortcuts.min_effect``."""
    significance = f"(p = {finding.p_value:.1e}, needed <= {finding.level:.1e})"
    if finding.kind == "color":
        return (
            f"after epoch {finding.epoch} the model relies on colour: given the colour of an image of another class "
            f"(brightness kept), the prediction follows it in {finding.follow_rate:.0%} of {finding.trials} images and "
            f"stays in {finding.stay_rate:.0%}; it raises the donor's class by {margin:.0%} more than the image's own "
            f"colour given the same way in {finding.win_rate:.0%} of images {significance}; in grey, "
            f"{finding.flip_rate:.0%} of predictions change."
        )
    evidence = (
        f"the prediction follows it in {finding.follow_rate:.0%} of {finding.trials} transplants "
        f"and stays in {finding.stay_rate:.0%}"
    )
    if finding.partial:
        evidence += (
            f": it does not decide most of them (the model reads it beside the object); it raises the donor's class by {margin:.0%} "
            f"more than each of 4 pieces of the same size where the model looks in {finding.win_rate:.0%} of "
            f"images and by {margin:.0%} less than one of them in {finding.loss_rate:.0%}"
        )
    else:
        evidence += (
            f"; it raises the donor's class by {margin:.0%} more than each of 4 pieces of the same size "
            f"where the model looks in {finding.win_rate:.0%} of images "
            f"(those pieces were followed in {finding.random_follow_rate:.0%})"
        )
    evidence += f" {significance}"
    relies = "partly relies" if finding.partial else "relies"
    top, left, bottom, right = finding.box
    shape = f"{bottom - top}x{right - left}"
    where = f"(rows {top}-{bottom - 1}, columns {left}-{right - 1}, found with {finding.method})"
    if finding.kind == "moving_region":
        where_placed = describe_places(places if places else [as_box(finding.box)], size)
        moving = (
            f"after epoch {finding.epoch} the model relies on a small {shape} region at varying places "
            f"({where_placed}, found with {finding.method})"
        )
        read = _where_read(finding.boxes_read, margin)
        if not finding.classes:
            tie = margin * MOVING_DEAD_ZONE
            return (
                f"{moving}: each image's own region (and its other hot spots along the border) given the region of an "
                f"image of another class, the prediction follows in {finding.follow_rate:.0%} of {finding.trials} "
                f"transplants and stays in {finding.stay_rate:.0%}; it raises the donor's class by {tie:.1%} more than "
                f"the donor's most telling other piece given the same way in {finding.win_rate:.0%} of images, and by "
                f"{tie:.1%} less in {finding.loss_rate:.0%} {significance}.{read}"
            )
        donors = ", ".join(map(str, finding.classes))
        return (
            f"{moving}: pasted at all those places at once from images of class "
            f"{donors}, the prediction follows in {finding.follow_rate:.0%} of {finding.trials} transplants and "
            f"stays in {finding.stay_rate:.0%}; it raises class {donors} by {margin:.0%} more than as many pieces "
            f"where the model looks in {finding.win_rate:.0%} of images, more often than by {margin:.0%} less "
            f"{significance}.{read}"
        )
    if finding.kind == "class_mark":
        return (
            f"after epoch {finding.epoch} the model {relies} on a {shape} mark at the "
            f"{describe_place(as_box(finding.box), size)} {where} that images of class "
            f"{', '.join(map(str, finding.classes))} carry: pasted into images of other classes, {evidence}."
        )
    return (
        f"after epoch {finding.epoch} the model {relies} on a {shape} region at the "
        f"{describe_place(as_box(finding.box), size)} {where}: pasted from an image of another class, {evidence}; "
        f"replacing it changes {finding.flip_rate:.0%} of predictions (elsewhere: {finding.random_flip_rate:.0%})."
    )


def outlined_again_message(reported: Finding, fresh: Finding, margin: float) -> str:
    """The message of the moving region ``reported`` once ``fresh``, a later confirmation of it, outlines its probes:
    the sentence saying where the model reads it is ``fresh``'s, after epoch ``fresh.epoch``. ``margin``:
    ``Shortcuts.min_effect``.

    Example:
        >>> found = Finding(0, 10, "test_gradients", [0, 0, 4, 4], 0.5, True, "after epoch 0 ...", kind="moving_region",
        ...                 boxes=[[0, 0, 4, 4]] * 2, boxes_read=[True, False])
        >>> again = Finding(2, 30, "test_gradients", [0, 0, 4, 4], 0.6, True, "", kind="moving_region",
        ...                 boxes=[[0, 0, 4, 4], [28, 28, 32, 32]], boxes_read=[True, True])
        >>> found.message = found.message + _where_read(found.boxes_read, 0.05)
        >>> outlined_again_message(found, again, 0.05)
        'after epoch 0 ... Outlined again after epoch 2: filling it lowers the predicted class by 5% or more in every probe.'
    """
    head = reported.message.split(_READ_SENTENCE)[0].split(_AGAIN_SENTENCE)[0]  # the earlier outlines' sentences
    read = _where_read(fresh.boxes_read, margin).strip()
    return f"{head}{_AGAIN_SENTENCE}{fresh.epoch}" + (f": {read[0].lower()}{read[1:]}" if read else ".")


_READ_SENTENCE = " Filling it lowers the predicted class by "
"""How the sentence saying where a moving region is read begins (see :func:`_where_read`)."""
_AGAIN_SENTENCE = " Outlined again after epoch "
"""How the sentence of a moving region outlined again begins (see :func:`outlined_again_message`)."""


def _where_read(read: list[bool], margin: float) -> str:
    """In words, in how many probes the model reads a moving region's box (``Finding.boxes_read``)."""
    if not read:
        return ""
    if all(read):
        return f"{_READ_SENTENCE}{margin:.0%} or more in every probe."
    return (
        f"{_READ_SENTENCE}{margin:.0%} or more in {sum(read)} of {len(read)} probes; in "
        "the others the model does not read it there and its outline is drawn thin, in grey."
    )
