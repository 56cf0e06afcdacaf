#!/usr/bin/env bash
# Container test, as the organisers and Grand Challenge run it:
#  1. builds remind2reg-cet1 and remind2reg-t2 (./build.sh),
#  2. simulates one small case with the project's simulator (host Python; 64^3 at 2 mm) and a broken case,
#  3. organisers' command  docker run --rm --network none -v IN:/input/:ro -v OUT:/output IMAGE
#     - ceT1 image on the good case: exit 0, disp_0001_0000_0001_0001.nii.gz only (+ timings.json)
#     - T2 image on good + broken case: exit 1 (broken case named), the good case's T2 field still written
#     (its last stderr line, what the platform shows: "ERROR: run failed: ..." naming case 0999)
#  4. platform's command (GC layout: inputs.json + image sockets, -v tmpvol:/tmp, --gpus all when
#     nvidia-smi works), each interface: {iUS, ceT1}, {iUS, T2}, {iUS, ceT1, T2} with the ceT1 image and
#     {iUS, ceT1, T2} with the T2 image: one 4-D DSPF .mha each, equal to the organisers' field of the
#     sequence the sockets decide (ceT1, T2, ceT1 (build-time), T2 (build-time));
#  and checks names, shapes, dtype, finite values, no partial files, and that a successful run's last stderr
#  line (if any) does not read as a failure. Prints build and run times.
# Usage: ./test.sh   (SKIP_BUILD=1 reuses built images; KEEP=1 keeps the work folder; FAST=1 mounts a
# lighter model config at /opt/ml/model (the platform's model-tarball mount) for a quick CPU-only check;
# PREFIX=name builds and tests name-cet1 and name-t2 instead of remind2reg-cet1 and remind2reg-t2)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/remind2reg-test.XXXXXX")"
VOLUME="remind2reg-test-tmp-$$"
cleanup() { docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | awk '{printf "%.1f", $1}'; }

PREFIX="${PREFIX:-remind2reg}"
CET1="$PREFIX-cet1" T2="$PREFIX-t2"
if [ "${SKIP_BUILD:-0}" != 1 ]; then start=$(now); ./build.sh "$PREFIX"; echo "build.sh total: $(since "$start") s"; fi

echo "== making a small simulated case in $WORK"
"$PYTHON" - "$WORK" <<'PY'
import os, shutil, sys
work = sys.argv[1]
try:  # the demo's case when the simulator provides it, else a 64^3 simulated case
    from simulation.demo import make_demo_dataset
    dataset = str(make_demo_dataset(os.path.join(work, "dataset")))
except ImportError:
    from simulation.cases import make_simulated_case, write_dataset
    dataset = os.path.join(work, "dataset")
    write_dataset([make_simulated_case(1, shape=(64, 64, 64), spacing=2.0)], dataset)
images = os.path.join(dataset, "imagesTr")
good, bad = os.path.join(work, "in-good"), os.path.join(work, "in-bad")
os.makedirs(good); os.makedirs(bad)
first = sorted(n for n in os.listdir(images) if n.startswith("ReMIND2Reg_"))[0][11:15]
for name in sorted(os.listdir(images)):
    if name.startswith(f"ReMIND2Reg_{first}_"):
        shutil.copy(os.path.join(images, name), good)
        shutil.copy(os.path.join(images, name), bad)
        if name.endswith("_0000.nii.gz"):  # broken case 0999: truncated iUS
            data = open(os.path.join(images, name), "rb").read()
            open(os.path.join(bad, "ReMIND2Reg_0999_0000.nii.gz"), "wb").write(data[: len(data) // 2])
        if name.endswith("_0002.nii.gz"):
            shutil.copy(os.path.join(images, name), os.path.join(bad, "ReMIND2Reg_0999_0002.nii.gz"))
open(os.path.join(work, "case_id"), "w").write(first)
# one MR only (the reference for the one-socket GC jobs: with both MR the fields of the two sequences are fused)
for folder, modality in (("in-good-cet1", 1), ("in-good-t2", 2)):
    os.makedirs(os.path.join(work, folder))
    for m in (0, modality):
        shutil.copy(os.path.join(images, f"ReMIND2Reg_{first}_{m:04d}.nii.gz"), os.path.join(work, folder))
# Grand Challenge layout, one folder per interface: inputs.json + /input/images/<slug>/<uuid>.mha
import json, SimpleITK as sitk
from interfaces import grand_challenge as gc
for folder, modalities in (("in-gc", (0, 1, 2)), ("in-gc-cet1", (0, 1)), ("in-gc-t2", (0, 2))):
    gcdir, entries = os.path.join(work, folder), []
    for modality in modalities:
        slug, name = gc.INPUT_SLUGS[modality], f"ReMIND2Reg_{first}_{modality:04d}.nii.gz"
        os.makedirs(os.path.join(gcdir, "images", slug))
        sitk.WriteImage(sitk.ReadImage(os.path.join(images, name)),
                        os.path.join(gcdir, "images", slug, f"0d5e2c7a-{modality}.mha"))
        entries.append({"socket": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
                        "image": {"name": name}, "pk": modality})
    json.dump(entries, open(os.path.join(gcdir, "inputs.json"), "w"), indent=1)
PY
CASE="$(cat "$WORK/case_id")"
chmod -R a+rX "$WORK"

MODEL_ARGS=()
if [ "${FAST:-0}" = 1 ]; then
  mkdir -p "$WORK/model"
  echo '{"global": {"iterations": 1, "levels_mm": [8.0, 4.0]}, "deformable_discrete": {"levels_mm": [4.0]},
         "refine": {"iterations": 10, "level_mm": 4.0}}' > "$WORK/model/config.json"
  chmod -R a+rX "$WORK/model"
  MODEL_ARGS=(-v "$WORK/model":/opt/ml/model:ro)
fi
GPU_ARGS=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then GPU_ARGS=(--gpus all); fi
echo "GPU: ${GPU_ARGS[*]:-none (CPU)}"

run_container() {  # name image input expected_exit [extra docker args...]
  local name="$1" image="$2" input="$3" expected="$4"; shift 4
  mkdir -p "$WORK/out-$name"; chmod 777 "$WORK/out-$name"
  local start code; start=$(now)
  set +e
  docker run --rm --platform=linux/amd64 --network none "$@" \
    -v "$WORK/$input":/input/:ro -v "$WORK/out-$name":/output "${MODEL_ARGS[@]}" "$image" \
    > "$WORK/log-$name.txt" 2> "$WORK/err-$name.txt"
  code=$?
  set -e
  sed 's/^/    /' "$WORK/log-$name.txt"; sed 's/^/    stderr: /' "$WORK/err-$name.txt"
  echo "== $name: $image exit $code (expected $expected), run $(since "$start") s"
  [ "$code" = "$expected" ] || { echo "FAIL: $name exit status $code, expected $expected"; exit 1; }
}

last_err() { grep -v '^[[:space:]]*$' "$WORK/err-$1.txt" | tail -n 1; }
run_container organisers-cet1 "$CET1" in-good 0
# a successful run's last stderr line (if any: a library may warn) must not read as a failure
clean_err() { ! last_err "$1" | grep -qiE "error|fail|traceback" || { echo "FAIL: $1: $(last_err "$1")"; exit 1; }; }
clean_err organisers-cet1
# the GPU's I/O path (next case read ahead, fields written behind), forced on: the broken case is read ahead
run_container organisers-t2-broken "$T2" in-bad 1 -e REMIND2REG_OVERLAP_IO=1
grep -q "^ERROR: FAILED case 0999: ReMIND2Reg_0999_0000.nii.gz" "$WORK/err-organisers-t2-broken.txt" \
  || { echo "FAIL: broken case not named on stderr"; exit 1; }
last_err organisers-t2-broken | grep -q "^ERROR: run failed: .*case 0999: ReMIND2Reg_0999_0000.nii.gz" \
  || { echo "FAIL: the last stderr line does not name the broken case: $(last_err organisers-t2-broken)"; exit 1; }
grep -q "I/O overlaps the registration" "$WORK/log-organisers-t2-broken.txt" \
  || { echo "FAIL: REMIND2REG_OVERLAP_IO=1 did not overlap I/O in the container"; exit 1; }
run_container organisers-cet1-alone "$CET1" in-good-cet1 0
run_container organisers-t2-alone "$T2" in-good-t2 0
clean_err organisers-cet1-alone; clean_err organisers-t2-alone
docker volume create "$VOLUME" >/dev/null
# every interface: the sockets decide the sequence (both MRs: the image's build-time sequence)
run_container gc-cet1 "$CET1" in-gc 0 "${GPU_ARGS[@]}" -v "$VOLUME":/tmp
run_container gc-cet1-only "$CET1" in-gc-cet1 0 "${GPU_ARGS[@]}" -v "$VOLUME":/tmp
run_container gc-t2-only "$CET1" in-gc-t2 0 "${GPU_ARGS[@]}" -v "$VOLUME":/tmp
run_container gc-both-t2-image "$T2" in-gc 0 "${GPU_ARGS[@]}" -v "$VOLUME":/tmp
for name in gc-cet1 gc-cet1-only gc-t2-only gc-both-t2-image; do clean_err "$name"; done

"$PYTHON" - "$WORK" "$CASE" <<'PY'
import json, os, sys
import nibabel as nib, numpy as np, SimpleITK as sitk
from interfaces import conventions as cv
from interfaces import grand_challenge as gc
work, case = sys.argv[1], sys.argv[2]
fixed = nib.load(os.path.join(work, "in-good", cv.image_name(case, 0)))

def check_dir(out, expected):
    names = sorted(os.listdir(out))
    assert names == sorted(expected), f"{out}: {names} != {sorted(expected)}"
    fields = {}
    for name in expected:
        if name.startswith("disp_"):
            field = np.asarray(nib.load(os.path.join(out, name)).dataobj)
            assert field.shape == fixed.shape + (3,), (name, field.shape)
            assert field.dtype == np.float32 and np.isfinite(field).all(), name
            assert np.abs(field).max() > 0, f"{name}: all-zero field"
            fields[name] = field
    return fields

cet1 = cv.displacement_name(case, 1)
fields = check_dir(os.path.join(work, "out-organisers-cet1"), [cet1, "timings.json"])
timings = json.load(open(os.path.join(work, "out-organisers-cet1", "timings.json")))["pairs"]
assert list(timings) == [cv.pair_key(case, 1)], timings
t2 = cv.displacement_name(case, 2)
fields.update(check_dir(os.path.join(work, "out-organisers-t2-broken"), [t2, "timings.json"]))
differences = {}
fields["alone " + cet1] = check_dir(os.path.join(work, "out-organisers-cet1-alone"), [cet1, "timings.json"])[cet1]
fields["alone " + t2] = check_dir(os.path.join(work, "out-organisers-t2-alone"), [t2, "timings.json"])[t2]
for name, expected in (("gc-cet1", cet1), ("gc-cet1-only", "alone " + cet1), ("gc-t2-only", "alone " + t2),
                       ("gc-both-t2-image", t2)):
    gc_dir = os.path.join(work, f"out-{name}", "images", gc.SLUG_DISPLACEMENT)
    assert sorted(os.listdir(os.path.join(work, f"out-{name}"))) == ["images"], name
    assert os.listdir(gc_dir) == [gc.OUTPUT_FILENAME], (name, os.listdir(gc_dir))
    image = sitk.ReadImage(os.path.join(gc_dir, gc.OUTPUT_FILENAME))
    assert image.GetDimension() == 4 and image.GetSize() == fixed.shape + (3,), (name, image.GetSize())
    voxel, grid = cv.physical_to_voxel_field(image)
    differences[name] = float(np.abs(voxel - fields[expected]).max())
    assert differences[name] < 1e-3, f"{name}: GC field differs from the organisers' {expected} by " \
                                     f"{differences[name]} voxels"
    log = open(os.path.join(work, f"log-{name}.txt")).read()
    assert f"output for {cv.MODALITIES[int(expected[-8])]}" in log, name
print(f"checks ok: organisers' ceT1 + T2 (broken case failed alone), every GC interface's DSPF == the organisers' "
      f"field of the same inputs, for the sequence its sockets decide (max diff in voxels {differences}), timings {timings}")
PY
echo "image sizes: $(for i in "$CET1" "$T2"; do docker image inspect $i --format "$i {{.Size}}" | awk '{printf "%s %.2f GB  ", $1, $2/1e9}'; done)"
echo "test.sh: PASS"
