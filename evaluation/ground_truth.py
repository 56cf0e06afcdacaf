"""The organisers' ground-truth folder: which pairs to evaluate, their landmarks, spacing and grid.

Layout (docs/CONVENTIONS.md §2, the organisers' public evaluation config):
    imagesTr/ReMIND2Reg_XXXX_000M.nii.gz     headers give shape and spacing (voxels are never read)
    landmarksTr/ReMIND2Reg_XXXX_000M.csv     N x 3, 0-based voxel (i, j, k); _0000.csv serves both MR pairs
    *.json holding "eval_pairs": [{"fixed": "./imagesTr/..._0000.nii.gz", "moving": "./imagesTr/..._0001.nii.gz"}]
Without a config every pair with landmarks on both sides is evaluated.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import numpy as np

from interfaces.conventions import (FIXED_INDEX, IMAGE_SUFFIXES, MODALITIES, Grid, image_name, landmark_name,
                                    pair_key, parse_image_name)

DEFAULT_GROUND_TRUTH = "/opt/ml/input/data/ground_truth"
IMAGES_DIR, LANDMARKS_DIR = "imagesTr", "landmarksTr"


class GroundTruthError(ValueError):
    """Missing or malformed ground truth for one pair (one line, names pair and file)."""


@dataclass(frozen=True)
class Pair:
    case: str
    moving: int                  # moving modality index: 1 = ceT1, 2 = T2

    @property
    def key(self) -> str:
        return pair_key(self.case, self.moving)

    @property
    def sequence(self) -> str:
        return MODALITIES[self.moving]


def find_config(gt_dir: str) -> str | None:
    """The first *.json (sorted, top level) of the ground-truth folder that holds `eval_pairs`."""
    for path in sorted(glob.glob(os.path.join(gt_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("eval_pairs"), list):
            return path
    return None


def pairs_from_config(config_path: str) -> list[Pair]:
    with open(config_path, encoding="utf-8") as handle:
        entries = json.load(handle)["eval_pairs"]
    pairs = []
    for entry in entries:
        fixed = parse_image_name(os.path.basename(entry["fixed"]))
        moving = parse_image_name(os.path.basename(entry["moving"]))
        if fixed is None or moving is None or fixed[1] != FIXED_INDEX or moving[0] != fixed[0] or moving[1] == 0:
            raise GroundTruthError(f"{os.path.basename(config_path)}: unexpected eval pair {entry}")
        pairs.append(Pair(fixed[0], moving[1]))
    return pairs


def pairs_from_landmarks(gt_dir: str) -> list[Pair]:
    pairs = []
    for path in sorted(glob.glob(os.path.join(gt_dir, LANDMARKS_DIR, "ReMIND2Reg_*_*.csv"))):
        parsed = parse_image_name(os.path.basename(path)[:-4] + ".nii.gz")
        if parsed and parsed[1] != FIXED_INDEX and os.path.isfile(landmark_path(gt_dir, parsed[0], FIXED_INDEX)):
            pairs.append(Pair(parsed[0], parsed[1]))
    return pairs


def discover_pairs(gt_dir: str) -> tuple[list[Pair], str | None]:
    """(pairs to evaluate, config file used or None)."""
    if not os.path.isdir(gt_dir):
        raise GroundTruthError(f"ground-truth folder {gt_dir} does not exist")
    config = find_config(gt_dir)
    return (pairs_from_config(config), config) if config else (pairs_from_landmarks(gt_dir), None)


def landmark_path(gt_dir: str, case: str, modality: int) -> str:
    return os.path.join(gt_dir, LANDMARKS_DIR, landmark_name(case, modality))


def image_path(gt_dir: str, case: str, modality: int) -> str:
    for suffix in IMAGE_SUFFIXES:
        path = os.path.join(gt_dir, IMAGES_DIR, image_name(case, modality, suffix))
        if os.path.isfile(path):
            return path
    return os.path.join(gt_dir, IMAGES_DIR, image_name(case, modality))


def load_landmarks(pair: Pair, gt_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(fixed points, moving points), each N x 3 float64 voxel indices.

    Parsed with `np.loadtxt(delimiter=",")` as the organisers do; a file that does not parse, or holds a
    NaN/Inf, is named with the first offending row (1-based line number) in a one-line GroundTruthError."""
    points = []
    for modality in (FIXED_INDEX, pair.moving):
        path = landmark_path(gt_dir, pair.case, modality)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise GroundTruthError(f"{pair.key}: {name}: missing landmark file")
        try:
            values = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError:
            values = None
        if values is None or values.ndim != 2 or values.shape[1] != 3 or not np.isfinite(values).all():
            raise GroundTruthError(f"{pair.key}: {name}: {_first_bad_row(path)}")
        points.append(values)
    if points[0].shape != points[1].shape:
        raise GroundTruthError(f"{pair.key}: {points[0].shape[0]} fixed vs {points[1].shape[0]} moving landmarks")
    return points[0], points[1]


def _first_bad_row(path: str) -> str:
    """Why a landmark CSV is not finite N x 3, naming its first bad row by line number."""
    rows = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            rows += 1
            cells = [c.strip() for c in text.split(",")]
            shown = text if len(text) <= 80 else text[:77] + "..."
            if len(cells) != 3:
                return f"row {number}: {len(cells)} values, expected 3 (x,y,z voxel indices): '{shown}'"
            try:
                values = [float(c) for c in cells]
            except ValueError:
                return f"row {number}: not a number: '{shown}'"
            if not all(np.isfinite(values)):
                return f"row {number}: non-finite landmark coordinate (NaN/Inf): '{shown}'"
    return "no landmarks" if rows == 0 else "landmarks must be finite N x 3"


def image_header(pair: Pair, gt_dir: str, modality: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, spacing) from an image header, read as the organisers do (nibabel `get_zooms()[:3]`)."""
    path = image_path(gt_dir, pair.case, modality)
    if not os.path.isfile(path):
        raise GroundTruthError(f"{pair.key}: {os.path.basename(path)}: missing image (its header gives "
                               f"shape and spacing)")
    if path.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        header = nib.load(path).header
        return tuple(int(s) for s in header.get_data_shape()[:3]), tuple(float(z) for z in header.get_zooms()[:3])
    grid = image_grid(pair, gt_dir, modality)
    return grid.shape, grid.spacing


def image_grid(pair: Pair, gt_dir: str, modality: int) -> Grid:
    """The full ITK geometry of an image (header only)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(image_path(gt_dir, pair.case, modality))
    reader.ReadImageInformation()
    direction = reader.GetDirection()
    if reader.GetDimension() != 3:
        raise GroundTruthError(f"{pair.key}: image is {reader.GetDimension()}-D, expected 3-D")
    return Grid(tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing()),
                tuple(float(o) for o in reader.GetOrigin()), tuple(float(d) for d in direction))
