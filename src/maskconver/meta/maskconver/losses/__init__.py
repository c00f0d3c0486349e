"""Losses: center focal loss, mask BCE and Dice, and the criterion combining them."""

from maskconver.meta.maskconver.losses.criterion import MaskConverCriterion
from maskconver.meta.maskconver.losses.focal import center_focal_loss
from maskconver.meta.maskconver.losses.mask import mask_bce_loss, mask_dice_loss

__all__ = ["MaskConverCriterion", "center_focal_loss", "mask_bce_loss", "mask_dice_loss"]
