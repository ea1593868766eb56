"""LF-Net (Ono, Trulls, Fua, Yi, NeurIPS 2018): the ``lfnet`` method.

``networks`` (detector and descriptor modules), ``ops`` (scale space, NMS, refinement and their
inference re-statements), ``extractor`` (``LFNet``, the declaration the registry finds through
this import), ``tf_convert`` (official TF variable names). See docs/lfnet_lift.md.
"""

from .extractor import LFNet

__all__ = ["LFNet"]
