"""Tiny synthetic ReMIND2Reg ground truth and submissions for the evaluation tests (no real data)."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from interfaces.conventions import (Grid, displacement_name, image_from_array, image_name, landmark_name,
                                    voxel_to_physical_field)

SHAPE = (32, 30, 28)
SPACING = (0.5, 0.5, 0.5)


def oblique_grid(shape=SHAPE, spacing=SPACING) -> Grid:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Grid(tuple(shape), tuple(spacing), (10.0, -20.0, 5.0), tuple(rotation.ravel()))


def make_ground_truth(root: str, cases=("0099", "0100"), modalities=(1, 2), n_landmarks=6, shape=SHAPE,
                      spacing=SPACING, config=True, seed=0) -> dict:
    """Write imagesTr, landmarksTr and (optionally) a config; return {(case, m): (fixed_pts, moving_pts)}."""
    rng = np.random.default_rng(seed)
    grid = oblique_grid(shape, spacing)
    os.makedirs(os.path.join(root, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(root, "landmarksTr"), exist_ok=True)
    points, eval_pairs = {}, []
    yy = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float32)
    for case in cases:
        fixed_pts = rng.uniform(4, np.asarray(shape) - 5, (n_landmarks, 3))
        np.savetxt(os.path.join(root, "landmarksTr", landmark_name(case, 0)), fixed_pts, delimiter=",")
        blob = np.exp(-((yy - np.asarray(shape) / 2) ** 2).sum(-1) / 60).astype(np.float32) * 100
        sitk.WriteImage(image_from_array(blob, grid), os.path.join(root, "imagesTr", image_name(case, 0)))
        for m in modalities:
            moving_pts = fixed_pts + rng.normal(0, 2.0, fixed_pts.shape)
            np.savetxt(os.path.join(root, "landmarksTr", landmark_name(case, m)), moving_pts, delimiter=",")
            sitk.WriteImage(image_from_array(np.roll(blob, 2, axis=0), grid),
                            os.path.join(root, "imagesTr", image_name(case, m)))
            points[(case, m)] = (fixed_pts, moving_pts)
            eval_pairs.append({"fixed": f"./imagesTr/{image_name(case, 0)}",
                               "moving": f"./imagesTr/{image_name(case, m)}"})
    if config:
        with open(os.path.join(root, "ReMIND2Reg_dataset.json"), "w") as handle:
            json.dump({"name": "ReMIND2Reg", "eval_pairs": eval_pairs}, handle)
    return points


def smooth_field(shape=SHAPE, seed=1, amplitude=1.5) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(tuple(shape) + (3,)), (3, 3, 3, 0))
    return (field / np.abs(field).max() * amplitude).astype(np.float32)


def write_nifti_field(folder: str, case: str, m: int, field: np.ndarray, suffix=".nii.gz") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, displacement_name(case, m, suffix))
    if suffix == ".npz":
        np.savez_compressed(path, arr_0=field)
    else:
        nib.save(nib.Nifti1Image(field, np.eye(4)), path)
    return path


def write_gc_layout(folder: str, fields: dict, grid: Grid, durations=None) -> str:
    """Grand Challenge evaluation input: predictions.json + <pk>/output/images/displacement-field/*.mha."""
    jobs = []
    for n, ((case, m), field) in enumerate(sorted(fields.items())):
        pk = f"job-{case}-{m}-{n:04d}"
        out = os.path.join(folder, pk, "output", "images", "displacement-field")
        os.makedirs(out, exist_ok=True)
        sitk.WriteImage(voxel_to_physical_field(field, grid), os.path.join(out, "a1b2c3.mha"))
        key = "socket" if n % 2 else "interface"  # the platform renamed "interface" to "socket"
        slug_mr = {1: "preoperative-t1-contrast-mri", 2: "preoperative-t2-mri"}[m]
        job = {"pk": pk,
               "inputs": [{key: {"slug": "intraoperative-ultrasound", "relative_path": "images/intraoperative-ultrasound"},
                           "image": {"name": image_name(case, 0)}},
                          {key: {"slug": slug_mr, "relative_path": f"images/{slug_mr}"},
                           "image": {"name": image_name(case, m)}}],
               "outputs": [{key: {"slug": "displacement-field", "relative_path": "images/displacement-field"},
                            "image": {"name": "a1b2c3.mha"}}]}
        if durations:
            job["exec_duration"] = django_duration(durations[(case, m)])
            job["invoke_duration"] = None
        jobs.append(job)
    with open(os.path.join(folder, "predictions.json"), "w") as handle:
        json.dump(jobs, handle)
    return folder


def django_duration(seconds: float) -> str:
    """A duration as the platform serialises it (Django's duration_iso_string, e.g. 'P0DT00H22M17S')."""
    micro = int(round(seconds * 1e6))
    days, micro = divmod(micro, 86400 * 10**6)
    hours, micro = divmod(micro, 3600 * 10**6)
    minutes, micro = divmod(micro, 60 * 10**6)
    whole, micro = divmod(micro, 10**6)
    return f"P{days}DT{hours:02d}H{minutes:02d}M{whole:02d}{f'.{micro:06d}' if micro else ''}S"
