"""Converters from annotation formats into the COCO panoptic layout, and back to instances.

One module per source format, over the shared ones:

* ``report``: ``ConvertReport``, what was converted, skipped (a whole file or image) and dropped
  (one annotation or shape), with the reason; ``strict`` turns the first problem into an error;
* ``geometry``: coordinates checked against the image before anything rasterises them;
* ``categories``: category map files (YAML / JSON) and the id-0 remap;
* ``paint``: ``Canvas``, the ``[H, W]`` id map that segments are painted into;
* ``output``: the output guard (never over the input, never over an existing split without
  ``overwrite``) and ``DatasetOutput``, which copies images and writes the PNGs + JSON through
  ``maskconver.data.writer.CocoPanopticWriter``.

Sources: ``coco_instances`` (COCO instance JSON, optional stuff JSON or label PNGs), ``labelme``
(a folder of labelme JSON files), ``voc`` (SegmentationObject + SegmentationClass PNGs);
``to_instances`` writes a COCO instance JSON from a panoptic split. The rules are in
``docs/data-formats.md``.
"""
