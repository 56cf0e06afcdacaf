"""Grand Challenge interface: `/input/inputs.json` + image sockets in, one DSPF displacement field out.

Socket slugs are defined here (the evaluation imports them from this module). The output field is the
physical form of interfaces/conventions.py (mm, ITK/LPS axes, fixed grid; docs/CONVENTIONS.md §6).
"""
from __future__ import annotations

import json
import os

from interfaces import conventions as cv
from interfaces.logs import one_line

INPUTS_JSON = "inputs.json"
SLUG_IUS = "intraoperative-ultrasound"        # fixed
SLUG_CET1 = "preoperative-t1-contrast-mri"    # moving, ceT1
SLUG_T2 = "preoperative-t2-mri"               # moving, T2
SLUG_DISPLACEMENT = "displacement-field"      # output (DSPF kind)
INPUT_SLUGS = {cv.MODALITY_INDEX["iUS"]: SLUG_IUS, cv.MODALITY_INDEX["ceT1"]: SLUG_CET1,
               cv.MODALITY_INDEX["T2"]: SLUG_T2}
SLUG_MODALITY = {slug: modality for modality, slug in INPUT_SLUGS.items()}
OUTPUT_FILENAME = "displacement-field.mha"
IMAGE_SUFFIXES = cv.IMAGE_SUFFIXES + (".tif", ".tiff")  # a socket may also hold the platform's TIFF


class SocketError(ValueError):
    """A problem with inputs.json or an image socket; one line."""


def is_grand_challenge_layout(input_dir: str) -> bool:
    return os.path.isfile(os.path.join(input_dir, INPUTS_JSON))


def socket_of(item: dict) -> dict:
    """The socket description of an input/output item: "interface" on today's platform, "socket" after its
    rename (both read, here and by the evaluation, in this one order)."""
    return item.get("interface") or item.get("socket") or {}


def _inside(input_dir: str, relative_path: str, slug: str) -> str:
    """`input_dir`/`relative_path`, refused when the path leaves the input folder (absolute, or `..` above it):
    a job reads its own sockets only. Checked on the written path; a symlink inside the input folder is
    followed (the platform makes none; a local test folder may link its images)."""
    if not isinstance(relative_path, str):
        raise SocketError(f"socket {slug!r}: relative_path {relative_path!r} is not a path")
    parts = os.path.normpath(relative_path).split(os.sep)
    if os.path.isabs(relative_path) or parts[0] == os.pardir:
        raise SocketError(f"socket {slug!r}: relative_path {relative_path!r} is outside the input folder "
                          f"{input_dir}; a socket's path must lie inside it")
    return os.path.join(input_dir, os.path.normpath(relative_path))


def _socket_image(input_dir: str, relative_path: str, slug: str) -> str:
    path = _inside(input_dir, relative_path, slug)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise SocketError(f"{relative_path}: folder of socket {slug!r} not found")
    images = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if len(images) != 1:
        raise SocketError(f"{relative_path}: socket {slug!r} should hold exactly one image, found {len(images)}"
                          f" ({', '.join(images) or 'none'})")
    return os.path.join(path, images[0])


def read_inputs(input_dir: str) -> tuple[dict[int, str], dict[int, str], list[str]]:
    """From inputs.json: (modality -> image path, modality -> original image name, ignored slugs).

    Each entry is {"interface" or "socket": {"slug", "kind", "relative_path"}, "image": {"name"}, ...}.
    """
    json_path = os.path.join(input_dir, INPUTS_JSON)
    try:
        with open(json_path) as handle:
            entries = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SocketError(f"{INPUTS_JSON}: cannot read ({one_line(exc)})") from None
    if not isinstance(entries, list):
        raise SocketError(f"{INPUTS_JSON}: expected a list of socket values, got {type(entries).__name__}")
    paths, names, ignored = {}, {}, []
    for entry in entries:
        socket = socket_of(entry) if isinstance(entry, dict) else {}
        slug = socket.get("slug")
        if slug not in SLUG_MODALITY:
            ignored.append(str(slug))
            continue
        modality = SLUG_MODALITY[slug]
        paths[modality] = _socket_image(input_dir, socket.get("relative_path") or f"images/{slug}", slug)
        image = entry.get("image") or {}
        names[modality] = image.get("name") or os.path.basename(paths[modality])
    if cv.FIXED_INDEX not in paths:
        raise SocketError(f"{INPUTS_JSON}: missing iUS (fixed image) socket {SLUG_IUS!r}")
    return paths, names, ignored


def choose_target(available: list[int] | set[int], wanted: tuple[int, ...]) -> int:
    """The job's moving sequence: the sockets present decide, whatever sequence the image was built for.

    One MR socket: that sequence. Both: the first of `wanted` (the image's build-time REMIND2REG_SEQUENCES)
    that is present, i.e. ceT1 for the ceT1 and the `all` image, T2 for the T2 image; ceT1 when none of
    `wanted` is present. No MR socket: SocketError.
    """
    movings = sorted(m for m in available if m != cv.FIXED_INDEX)
    if not movings:
        raise SocketError(f"{INPUTS_JSON}: no MR image socket ({SLUG_CET1} or {SLUG_T2})")
    for modality in wanted:
        if modality in movings:
            return modality
    return movings[0]  # ceT1 (0001) before T2 (0002)


def output_path(output_dir: str) -> str:
    return os.path.join(output_dir, "images", SLUG_DISPLACEMENT, OUTPUT_FILENAME)
