"""Every list of methods outside the registry agrees with it.

Why: methods declare themselves (``registry.py``), so a list typed anywhere else goes stale the day
a method is added (ALIKED, DISK and XFeat were missing from the package description and the
package docstring). Lists that cannot be generated are checked here against
``registry.available_methods()`` and the methods' own declarations.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import local_features_ros
from local_features_ros.matchers.lightglue import RELEASED_WEIGHTS
from local_features_ros.pretrained import RELEASED_FILES
from local_features_ros.registry import available_methods, method_classes

REPO = Path(__file__).resolve().parents[2]


def _key(name: str) -> str:
    """``D2-Net`` / ``d2net`` / ``LF-Net`` -> one spelling (lower case, letters and digits)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _listed(text: str) -> set[str]:
    """Names in the parenthesised lists of ``text``: ``features (A, B-C) and (D)`` -> {a, bc, d}."""
    return {_key(n) for group in re.findall(r"\(([^()]*)\)", text) for n in group.split(",")}


def _shell_default(script: Path, variable: str) -> set[str]:
    """Words of ``VAR=${VAR-words}`` / ``VAR="words"``, the defaults a shell script sets."""
    text = script.read_text(encoding="utf-8")
    found = re.findall(rf'{variable}=(?:\$\{{{variable}:?-([^}}]*)\}}|"([^"]*)")', text)
    assert found, f"{variable} has no default in {script.relative_to(REPO)}"
    return {word for pair in found for word in " ".join(pair).split()}


def test_package_xml_description_names_every_node_method():
    description = ET.parse(REPO / "package.xml").getroot().findtext("description") or ""
    node_methods = {_key(m) for m in available_methods(include_evaluation_only=False)}
    listed = _listed(description)
    assert listed == node_methods, (
        f"package.xml <description> lists {sorted(listed)}; the registry's node methods are "
        f"{sorted(node_methods)}")


def test_package_docstring_lists_all_methods_or_none():
    """The package docstring may name methods only if it names all of them."""
    words = {_key(w) for w in re.findall(r"[\w-]+", local_features_ros.__doc__ or "")}
    named = {_key(m) for m in available_methods()} & words
    assert not named or named == {_key(m) for m in available_methods()}, (
        f"local_features_ros/__init__.py names {sorted(named)}, not every method")


def test_released_lightglue_weights_are_the_declared_ones():
    """``matcher.type: lightglue`` finds released weights for exactly the methods whose class
    declares ``lightglue_weights``, and for the same files, which ``pretrained.py`` knows."""
    declared = {name: cls.lightglue_weights for name, cls in method_classes().items()
                if cls.lightglue_weights}
    assert declared == RELEASED_WEIGHTS
    assert set(RELEASED_WEIGHTS.values()) <= set(RELEASED_FILES)
    assert {"aliked", "disk", "xfeat"} <= set(declared)


def test_evaluate_all_runs_lightglue_for_every_method_with_released_weights():
    script = REPO / "scripts" / "evaluate_all.sh"
    lightglue = _shell_default(script, "LIGHTGLUE_METHODS")
    assert lightglue == set(RELEASED_WEIGHTS)
    assert lightglue <= _shell_default(script, "METHODS"), "each LightGlue run has its NN run"


def test_list_readers_see_a_stale_list(tmp_path):
    """The readers above find a planted omission."""
    assert _listed("features (SuperPoint, D2-Net) and baselines (ORB)") == {"superpoint", "d2net",
                                                                             "orb"}
    script = tmp_path / "evaluate_all.sh"
    script.write_text('METHODS="aliked orb"\nLIGHTGLUE_METHODS=${LIGHTGLUE_METHODS-aliked}\n')
    assert _shell_default(script, "LIGHTGLUE_METHODS") == {"aliked"} != set(RELEASED_WEIGHTS)
    assert _shell_default(script, "METHODS") == {"aliked", "orb"}
