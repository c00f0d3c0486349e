"""Tasks besides panoptic segmentation (``instance``: DR1Mask's instance-segmentation mode)."""
