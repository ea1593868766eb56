"""Which topics of a bag the node replays: checked against the bag before any process starts.

Why a module of its own: a missing bag, a topic that is not in it or a topic of another type
would otherwise replay nothing and end "successfully"; the choice of topic and transport is the
runner's, the bag's contents decide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["BagInput", "plan_bag_input"]


@dataclass(frozen=True)
class BagInput:
    """What the node subscribes to for a bag: image base topic, transport, camera_info topic."""

    image: str
    transport: str
    camera_info: str
    note: str = ""  # printed by the commands (e.g. the transport was chosen from the bag)


def plan_bag_input(bag: str | os.PathLike, image: str, camera_info: str, transport: str,
                   transport_explicit: bool) -> BagInput:
    """Check a bag against the requested topics before any process starts.

    Why: a missing bag, a topic that is not in it or a topic of another type would otherwise
    replay nothing and end "successfully". A bag that holds only CompressedImage is replayed with
    ``input_transport: compressed`` unless the user asked for raw explicitly.
    Raises ``ConfigError`` with the bag's image topics in the message.
    """
    from ..bags import (CAMERA_INFO_MSGTYPE, COMPRESSED_MSGTYPE, IMAGE_MSGTYPE, BagError,
                        list_topics)
    from ..conventions import ConfigError

    try:
        topics = list_topics(bag)
    except BagError as exc:
        raise ConfigError(str(exc)) from exc
    # Depth images are Image topics too; an automatic choice takes the camera's colour/grey one.
    by_type = {ty: sorted(t for t, y in topics.items() if y == ty)
               for ty in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE, CAMERA_INFO_MSGTYPE)}
    for ty in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE):
        by_type[ty].sort(key=lambda t: "depth" in t.lower())
    images = [f"{t} (Image)" for t in by_type[IMAGE_MSGTYPE]] + \
        [f"{t} (CompressedImage)" for t in by_type[COMPRESSED_MSGTYPE]]
    listing = ", ".join(images) or "no image topic"
    note = ""
    if image:
        name = image.rstrip("/")
        if topics.get(name) == COMPRESSED_MSGTYPE:
            if transport_explicit and transport == "raw":
                raise ConfigError(f"{name} in bag {bag} is a CompressedImage topic but "
                                  "input_transport=raw was set")
            name, transport = name.removesuffix("/compressed"), "compressed"
        elif topics.get(name) == IMAGE_MSGTYPE:
            if transport_explicit and transport == "compressed":
                raise ConfigError(f"{name} in bag {bag} is an Image topic but "
                                  "input_transport=compressed was set")
            transport = "raw"
        elif topics.get(name + "/compressed") == COMPRESSED_MSGTYPE and transport != "raw":
            transport = "compressed"
        elif topics.get(name + "/compressed") == COMPRESSED_MSGTYPE and not transport_explicit:
            transport, note = "compressed", f"{name}: replaying {name}/compressed"
        else:
            raise ConfigError(f"image topic {name} is not in bag {bag}; its image topics: "
                              f"{listing}")
        image = name
    else:
        want = COMPRESSED_MSGTYPE if transport == "compressed" else IMAGE_MSGTYPE
        other = IMAGE_MSGTYPE if want == COMPRESSED_MSGTYPE else COMPRESSED_MSGTYPE
        if by_type[want]:
            image = by_type[want][0]
        elif by_type[other] and not transport_explicit:
            image, transport = by_type[other][0], ("compressed" if other == COMPRESSED_MSGTYPE
                                                   else "raw")
            note = (f"the bag has no {'raw' if want == IMAGE_MSGTYPE else 'compressed'} image "
                    f"topic: replaying {image} with input_transport={transport}")
        else:
            hint = (f" (set input_transport={'raw' if want == COMPRESSED_MSGTYPE else 'compressed'}"
                    " to replay it)") if by_type[other] else ""
            raise ConfigError(f"bag {bag} has no {transport} image topic; its image topics: "
                              f"{listing}{hint}")
        if transport == "compressed":
            image = image.removesuffix("/compressed")
    if camera_info:
        if topics.get(camera_info) != CAMERA_INFO_MSGTYPE:
            found = ", ".join(by_type[CAMERA_INFO_MSGTYPE]) or "none"
            raise ConfigError(f"camera_info topic {camera_info} is not a CameraInfo topic of bag "
                              f"{bag} (CameraInfo topics: {found})")
    else:
        camera_info = _closest_info(image, by_type[CAMERA_INFO_MSGTYPE])
    return BagInput(image, transport, camera_info, note)


def _closest_info(image: str, infos: list[str]) -> str:
    """The CameraInfo topic beside ``image`` (``/cam/image_raw`` -> ``/cam/camera_info``), else
    the first one, else empty."""
    parent = image.rsplit("/", 1)[0]
    for info in infos:
        if info.rsplit("/", 1)[0] == parent:
            return info
    return infos[0] if infos else ""
