"""Packaging consistency: ONE version (interfaces/version.py) seen the same by process.py --version, the
changelog, CITATION.cff, the build/export scripts and the Makefile; both Dockerfiles carry the OCI labels;
one licence named alike in LICENSE, CITATION.cff and the image labels."""
import os
import re
import subprocess
import sys

import pytest

from interfaces.version import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["build.sh", "export.sh", "evaluation/build.sh", "evaluation/export.sh"]
DOCKERFILES = ["Dockerfile", "evaluation/Dockerfile"]
OCI_LABELS = ["version", "title", "source", "licenses", "revision"]


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def test_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), __version__


def test_process_version_option_prints_the_source_version():
    done = subprocess.run([sys.executable, "process.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["process.py", __version__]


def test_changelog_has_a_dated_entry_for_the_version():
    changelog = read("CHANGELOG.md")
    assert "## [Unreleased]" in changelog  # Keep a Changelog layout
    entry = re.search(rf"^## \[{re.escape(__version__)}\] - (\d{{4}}-\d{{2}}-\d{{2}})$", changelog, re.M)
    assert entry, f"CHANGELOG.md has no '## [{__version__}] - YYYY-MM-DD' entry"
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert versions[0] == __version__, "the newest released entry must be the current version"
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


def test_citation_version_and_date_match():
    citation = read("CITATION.cff")
    assert re.search(r"^cff-version: 1\.2\.0$", citation, re.M)
    assert re.search(r"^version: (\S+)$", citation, re.M).group(1).strip("\"'") == __version__
    released = re.search(r"^date-released: \"?(\d{4}-\d{2}-\d{2})\"?$", citation, re.M).group(1)
    entry = re.search(rf"^## \[{re.escape(__version__)}\] - (\S+)$", read("CHANGELOG.md"), re.M)
    assert entry and entry.group(1) == released


def test_citation_cites_the_challenge_and_both_datasets():
    citation = read("CITATION.cff")
    for doi in ("10.48550/arXiv.2508.09649", "10.1109/TMI.2022.3213983", "10.1002/mp.12268",
                "10.1038/s41597-024-03295-z"):
        assert f"doi: {doi}" in citation, doi


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_read_the_same_version(script):
    """The scripts' own VERSION= line, run by bash from the script's folder as the script runs it."""
    line = next(l for l in read(script).splitlines() if l.startswith("VERSION="))
    folder = os.path.join(ROOT, os.path.dirname(script))
    done = subprocess.run(["bash", "-c", f'set -e; ROOT="{ROOT}"; cd "{folder}"; {line.replace("$0", "./x")}; echo "$VERSION"'],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __version__


def test_makefile_reads_the_same_version():
    done = subprocess.run(["make", "-s", "version"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __version__


def test_images_get_a_version_tag():
    assert '-t "$image:$VERSION"' in read("build.sh")
    assert '-t "$IMAGE:$VERSION"' in read("evaluation/build.sh")
    assert '"$image:$VERSION"' in read("export.sh") and '"$IMAGE:$VERSION"' in read("evaluation/export.sh")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_carry_the_oci_labels(dockerfile):
    text = read(dockerfile)
    for arg in ("VERSION", "REVISION", "SOURCE"):
        assert re.search(rf"^ARG {arg}\b", text, re.M), arg
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in text, label
    assert 'org.opencontainers.image.version="${VERSION}"' in text
    assert 'org.opencontainers.image.revision="${REVISION}"' in text
    assert 'org.opencontainers.image.licenses="MIT"' in text


def test_one_licence_everywhere():
    assert read("LICENSE").startswith("MIT License")
    assert re.search(r"^license: MIT$", read("CITATION.cff"), re.M)
