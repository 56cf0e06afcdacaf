"""The project's version: the ONE place it is written.

Read by `process.py --version`, by build.sh / export.sh / evaluation/build.sh (image tags and the OCI label
org.opencontainers.image.version, through `python3 interfaces/version.py`), and checked against CHANGELOG.md
and CITATION.cff by test/test_version.py. Plain Python with no imports, so both containers (which copy
interfaces/*.py) and the shell scripts can read it.
"""
__version__ = "0.3.0"

if __name__ == "__main__":
    print(__version__)
