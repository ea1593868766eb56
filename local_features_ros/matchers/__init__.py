"""Matchers behind one interface (``Matcher.match(feats0, feats1) -> MatchResult``).

Every module here is scanned by ``matchers.base.matcher_classes``; see ``base.py``.
"""

from .base import Matcher, available_matchers, build_matcher, get_matcher_class

__all__ = ["Matcher", "available_matchers", "build_matcher", "get_matcher_class"]
