"""Packaging: each distribution's wheel holds its own package and metadata, nothing else.

The tests build wheels with the virtualenv's own setuptools (no build isolation, no
index), so they need no network. The same rules check the four wheels ``.ci/wheels``
builds: ``python tests/test_packaging.py --root SOURCE --all WHEEL...`` prints what it
checked in each wheel and exits 1 on any problem. That script mode runs on a bare Python
(the standard library only), which is why pytest and packaging are imported inside the
tests rather than at the top.
"""

from __future__ import annotations

import argparse
import configparser
import email.parser
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Distribution name as a wheel's file name spells it -> (its project folder, the folder
# of the one import package its wheel may hold), both relative to the repository root.
DISTRIBUTIONS = {
    "norc": (".", "norc"),
    "norc_command": ("norc_command", "norc_command/src/norc_command"),
    "norc_sqs": ("norc_sqs", "norc_sqs/src/norc_sqs"),
    "norc_s3": ("norc_s3", "norc_s3/src/norc_s3"),
}
# The core's files that are not found by importing modules: named, so a lost one is named.
CORE_DATA = [
    "norc/py.typed",
    "norc/store/migrations/env.py",
    "norc/store/migrations/script.py.mako",
    "norc/store/migrations/versions/0001_initial_schema.py",
    "norc/web/static/index.html",
    "norc/web/static/app.js",
    "norc/web/static/style.css",
]
# What a copy of the checkout leaves out: local state that must not reach a build.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache",
    ".hypothesis", "norc.db*", "norc-logs", "norc_logs",
)  # fmt: skip


def _is_local(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def package_files(root: Path, dist: str) -> set[str]:
    """The files of ``dist``'s import package in the source tree, as wheel paths."""
    package_dir = root / DISTRIBUTIONS[dist][1]
    return {
        f"{package_dir.name}/{p.relative_to(package_dir).as_posix()}"
        for p in package_dir.rglob("*")
        if p.is_file() and not _is_local(p.relative_to(package_dir))
    }


def _project(root: Path, dist: str) -> dict[str, object]:
    with (root / DISTRIBUTIONS[dist][0] / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def check_wheel(wheel: Path, root: Path = ROOT) -> tuple[list[str], str]:
    """The problems of ``wheel`` (none: an empty list) and a line saying what was checked."""
    match = re.fullmatch(r"([A-Za-z0-9_]+)-([^-]+)-py3-none-any\.whl", wheel.name)
    if match is None or match.group(1) not in DISTRIBUTIONS:
        return [f"not a wheel of one of {sorted(DISTRIBUTIONS)}"], ""
    dist, version = match.groups()
    package = Path(DISTRIBUTIONS[dist][1]).name
    dist_info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        texts = {n: zf.read(n).decode() for n in names if n.startswith(f"{dist_info}/")}
    metadata_text = texts.get(f"{dist_info}/METADATA", "")
    entry_text = texts.get(f"{dist_info}/entry_points.txt", "")
    problems: list[str] = []

    def some(paths: list[str] | set[str]) -> str:
        listed = sorted(paths)
        return ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")

    foreign = [n for n in names if n.split("/")[0] not in {package, dist_info}]
    if foreign:
        problems.append(
            f"{len(foreign)} files outside {package}/ and {dist_info}/: {some(foreign)}"
        )
    tests = [
        n
        for n in names
        if {"tests", "test"} & set(n.split("/")[:-1])
        or re.fullmatch(r"(test_.*|.*_test|conftest)\.py", n.rsplit("/", 1)[-1])
    ]
    if tests:
        problems.append(f"{len(tests)} test files: {some(tests)}")
    packaged = {n for n in names if n.startswith(f"{package}/")}
    expected = package_files(root, dist)
    if expected - packaged:
        problems.append(f"missing from {package}/: {some(expected - packaged)}")
    if packaged - expected:
        problems.append(f"in {package}/ but not in the source tree: {some(packaged - expected)}")
    if dist == "norc":
        lost = [f for f in CORE_DATA if f not in packaged]
        if lost:
            problems.append(f"package data missing: {some(lost)}")
    for required in ("METADATA", "WHEEL", "RECORD", "entry_points.txt"):
        if f"{dist_info}/{required}" not in names:
            problems.append(f"no {dist_info}/{required}")

    project = _project(root, dist)
    metadata = email.parser.Parser().parsestr(metadata_text)
    readme_path = root / DISTRIBUTIONS[dist][0] / str(project["readme"])
    readme = readme_path.read_text() if readme_path.is_file() else ""
    if not readme.strip():
        problems.append(f"{project['readme']} is missing or empty in the source tree")
    body = metadata.get_payload()
    if metadata["Description-Content-Type"] != "text/markdown":
        problems.append(f"Description-Content-Type is {metadata['Description-Content-Type']}")
    if not isinstance(body, str) or body.strip() != readme.strip():
        problems.append(f"the long description is not {project['readme']}")
    classifiers = metadata.get_all("Classifier") or []
    if not classifiers:
        problems.append("no classifiers")
    if metadata["License-Expression"] != project["license"]:
        problems.append(f"License-Expression is {metadata['License-Expression']}")
    requires = metadata.get_all("Requires-Dist") or []
    on_core = [r for r in requires if re.match(r"norc\b(?![-_])", r)]
    if dist != "norc" and not (on_core and "<" in on_core[0] and ">=" in on_core[0]):
        problems.append(f"no bounded requirement on norc (Requires-Dist: {requires})")
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.read_string(entry_text)
    declared = project.get("entry-points", {})
    assert isinstance(declared, dict)
    plugins = dict(entry_points["norc"]) if entry_points.has_section("norc") else {}
    if plugins != declared.get("norc", {}):
        problems.append(f"norc entry points {plugins} differ from pyproject.toml's")

    summary = (
        f"{wheel.name}: {len(packaged)} files under {package}/ (all {len(expected)} of the"
        f" source tree{', package data included' if dist == 'norc' else ''}), nothing else"
        f" but {dist_info}/; no tests; {project['readme']} as the long description"
        f" ({len(readme)} chars); {len(classifiers)} classifiers;"
        f" entry points norc: {', '.join(sorted(plugins))}"
        + (f"; requires {on_core[0]}" if on_core else "")
    )
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    """Check wheels from the command line; 0 when every one is right."""
    parser = argparse.ArgumentParser(description="Check Norc's wheels against a source tree.")
    parser.add_argument("wheels", nargs="+", type=Path)
    parser.add_argument("--root", type=Path, default=ROOT, help="the source tree built")
    parser.add_argument("--all", action="store_true", help="expect each distribution once")
    args = parser.parse_args(argv)
    failed = False
    for wheel in args.wheels:
        problems, summary = check_wheel(wheel, args.root)
        print(f"ok    {summary}" if not problems else f"FAIL  {wheel.name}")
        for problem in problems:
            print(f"      - {problem}")
        failed = failed or bool(problems)
    if args.all:
        seen = sorted(w.name.split("-")[0] for w in args.wheels)
        if seen != sorted(DISTRIBUTIONS):
            print(f"FAIL  expected one wheel each of {sorted(DISTRIBUTIONS)}, got {seen}")
            failed = True
    return 1 if failed else 0


# -- tests --------------------------------------------------------------------------------


def build_wheel(tmp_path: Path, dist: str) -> Path:
    """Build ``dist``'s wheel from a clean copy of the checkout, offline; return its path.

    A copy, so that no stale ``build/`` folder of the checkout reaches the wheel and the
    build writes nothing into the checkout.
    """
    import pytest

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pip install -e '.[test]')")
    source = tmp_path / "source"
    if not source.exists():
        shutil.copytree(ROOT, source, ignore=IGNORED)
    out = tmp_path / f"wheels-{dist}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source / DISTRIBUTIONS[dist][0])],
        check=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def test_core_wheel_holds_norc_only_with_its_package_data(tmp_path: Path) -> None:
    """The norc wheel: the norc package (py.typed, migrations, static files) and dist-info."""
    wheel = build_wheel(tmp_path, "norc")
    problems, _ = check_wheel(wheel, tmp_path / "source")
    assert problems == [], problems
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        tops = {n.split("/")[0] for n in names}
    assert tops == {"norc", wheel.name.split("-py3")[0] + ".dist-info"}
    assert set(CORE_DATA) <= names
    assert not any(n.startswith("norc_") for n in names)


def test_plugin_wheel_holds_its_package_only(tmp_path: Path) -> None:
    """The norc-command wheel: norc_command (with py.typed) and dist-info, no tests."""
    wheel = build_wheel(tmp_path, "norc_command")
    problems, _ = check_wheel(wheel, tmp_path / "source")
    assert problems == [], problems
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {n.split("/")[0] for n in names} == {
        "norc_command",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert {"norc_command/__init__.py", "norc_command/py.typed"} <= names


def test_the_checker_names_plugins_and_tests_in_the_core_wheel(tmp_path: Path) -> None:
    """A core wheel shaped like the one the bare ``include = ["norc*"]`` built fails."""
    wheel = tmp_path / "norc-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in package_files(ROOT, "norc"):
            zf.writestr(name, "")
        zf.writestr("norc_sqs/src/norc_sqs/__init__.py", "")
        zf.writestr("norc_sqs/tests/test_sqs.py", "")
    problems, _ = check_wheel(wheel)
    assert any("outside norc/" in p and "norc_sqs/src/norc_sqs/__init__.py" in p for p in problems)
    assert any("test files" in p and "norc_sqs/tests/test_sqs.py" in p for p in problems)
    assert any("no norc-0.1.0.dist-info/METADATA" in p for p in problems)


def test_each_plugin_supports_the_core_version_it_is_built_beside() -> None:
    """Each plugin's norc range holds the core's version, and stops before the next minor."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    core = Version(str(_project(ROOT, "norc")["version"]))
    next_minor = Version(f"{core.major}.{core.minor + 1}")
    for dist in DISTRIBUTIONS.keys() - {"norc"}:
        dependencies = _project(ROOT, dist)["dependencies"]
        assert isinstance(dependencies, list)
        (req,) = [r for r in map(Requirement, dependencies) if r.name == "norc"]
        assert core in req.specifier, (dist, str(req))
        assert next_minor not in req.specifier, (dist, str(req))


if __name__ == "__main__":
    sys.exit(main())
