"""LIFT (Yi, Trulls, Lepetit, Fua, ECCV 2016): the ``lift`` method.

``pyramid`` (test-time scales, canvas packing, sampling geometry), ``ops`` (3-D NMS, edge test,
refinement, patch geometry and their inference re-statements), ``networks`` (detector,
orientation and descriptor modules), ``extractor`` (``LIFT``, the declaration the registry finds
through this import), ``tf_convert`` (tf-lift variable names). See docs/lfnet_lift.md.
"""

from .extractor import LIFT

__all__ = ["LIFT"]
