"""Post-processing every meta-architecture shares.

``merge`` (the traceable tensor core of the panoptic merge), ``segments`` (the panoptic result
type and the Python numbering step after the core) and ``canvas`` (from the padded network
input to the original image canvas). Each meta-architecture's own post-processor lives in its
package (``maskconver.meta.<name>.postprocess``) and calls these.
"""
