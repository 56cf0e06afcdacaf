"""Organisers' interface: a flat folder of `ReMIND2Reg_XXXX_000M.<ext>` files in, `disp_...nii.gz` out."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from interfaces import conventions as cv
from interfaces.logs import log

SEQUENCES_ENV = "REMIND2REG_SEQUENCES"
# Which moving sequences a container registers, by the build-time value of REMIND2REG_SEQUENCES.
SEQUENCE_CHOICES = {"ceT1": (cv.MODALITY_INDEX["ceT1"],), "T2": (cv.MODALITY_INDEX["T2"],),
                    "all": (cv.MODALITY_INDEX["ceT1"], cv.MODALITY_INDEX["T2"])}


def wanted_modalities(value: str | None) -> tuple[int, ...]:
    """Moving modality indices for a REMIND2REG_SEQUENCES value (None/empty: all)."""
    value = (value or "all").strip()
    for key, modalities in SEQUENCE_CHOICES.items():
        if value.lower() == key.lower():
            return modalities
    raise ValueError(f"{SEQUENCES_ENV}={value!r}: expected one of {', '.join(SEQUENCE_CHOICES)}")


@dataclass
class Case:
    case: str
    files: dict[int, str] = field(default_factory=dict)  # modality index -> path
    problems: list[str] = field(default_factory=list)    # one-line errors found while listing


def near_miss(name: str) -> bool:
    """A name that looks meant as a ReMIND2Reg image but does not match the pattern (wrong case, digits or
    modality pattern, e.g. `ReMIND2Reg_12_0000.nii.gz`, `remind2reg_0001_0000.nii.gz`, `ReMIND2Reg_0001_T1.nii.gz`)."""
    if cv.parse_image_name(name) is not None:
        return False
    return "remind2reg" in name.lower() or name.lower().endswith(cv.IMAGE_SUFFIXES)


def find_cases(input_dir: str) -> tuple[dict[str, Case], list[str]]:
    """Cases in a flat folder, and the names of files that are not ReMIND2Reg images (ignored). Names that
    nearly match get a WARNING naming them (they are not read)."""
    cases: dict[str, Case] = {}
    ignored = []
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name)
        parsed = cv.parse_image_name(name)  # a folder under an image's name is kept: reading it says so
        if parsed is None:
            ignored.append(name)
            continue
        case_id, modality = parsed
        case = cases.setdefault(case_id, Case(case_id))
        if modality not in cv.MODALITIES:
            case.problems.append(f"{name}: unknown modality index {modality} (expected 0000 iUS, 0001 ceT1, "
                                 "0002 T2); ignored")
            continue
        if modality in case.files:
            case.problems.append(f"{name}: case {case_id} has two {cv.MODALITIES[modality]} files "
                                 f"({os.path.basename(case.files[modality])} and {name})")
            continue
        case.files[modality] = path
    near = [name for name in ignored if near_miss(name)]
    if near:
        log.warning("not read, the name does not match ReMIND2Reg_XXXX_000M.<ext> (case id of 4 ASCII digits 0-9, "
                    "0000 iUS, 0001 ceT1, 0002 T2; .nii.gz, .nii, .mha, .nrrd; exact case): %s", ", ".join(near))
    return cases, ignored


def case_pairs(case: Case, wanted: tuple[int, ...]) -> tuple[list[int], str | None]:
    """(moving modalities to register for this case, error or None). No iUS is an error; a case whose only
    MR sequences are not wanted by this container gives no pairs and no error."""
    duplicate = [p for p in case.problems if "two" in p]
    if duplicate:
        return [], duplicate[0]
    movings = [m for m in case.files if m != cv.FIXED_INDEX]
    if cv.FIXED_INDEX not in case.files:
        names = ", ".join(os.path.basename(case.files[m]) for m in sorted(case.files))
        return [], (f"{cv.image_name(case.case, cv.FIXED_INDEX)}: missing iUS (fixed image) for case {case.case}"
                    f" (found {names})")
    if not movings:
        return [], f"{os.path.basename(case.files[cv.FIXED_INDEX])}: case {case.case} has no MR image (0001/0002)"
    return [m for m in wanted if m in case.files], None


def output_name(case: str, moving: int) -> str:
    return cv.displacement_name(case, moving, ".nii.gz")
