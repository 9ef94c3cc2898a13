"""Builds the web dashboard (``web/``, Vite) into ``src/cloudai/web`` when the package
is built (``pip install .``, ``pip install -e .``, a wheel), so the master can serve it.
Every other setting is in pyproject.toml.

``npm ci`` installs the front-end's build tools exactly as ``web/package-lock.json``
pins them, then ``npm run build`` writes the page and its assets. It is skipped when the
built files are newer than every source file, when there is no ``web/`` (an sdist built
elsewhere), or, with a message, when ``npm`` is missing: the master then answers ``/``
with a line saying the dashboard was not built.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
BUILT = ROOT / "src" / "cloudai" / "web" / "index.html"


def _sources() -> list[Path]:
    files = [WEB / "package.json", WEB / "package-lock.json", WEB / "index.html"]
    files += [WEB / "vite.config.ts", WEB / "tsconfig.json"]
    files += [p for p in (WEB / "src").rglob("*") if p.is_file()]
    return [p for p in files if p.exists()]


def dashboard_is_current() -> bool:
    if not BUILT.exists():
        return False
    built = BUILT.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _sources())


def build_dashboard() -> None:
    if not (WEB / "package.json").exists() or dashboard_is_current():
        return
    npm = shutil.which("npm")
    if npm is None:
        state = "an older build is kept" if BUILT.exists() else "the master will say so at /"
        print(f"cloudai: npm not found: the web dashboard is not (re)built; {state}")
        return
    print("cloudai: building the web dashboard (npm ci && npm run build in web/)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True)
    subprocess.run([npm, "run", "build", "--silent"], cwd=WEB, check=True)


# Folders the dashboard's build writes: data only, shipped as packages of their own (a
# fresh checkout has no such folder when the packages are found, before the build).
WEB_PACKAGES = ("cloudai.web", "cloudai.web.assets")


class BuildPyWithDashboard(build_py):
    def run(self) -> None:
        build_dashboard()
        if BUILT.exists():
            self.packages = list(self.packages or [])
            self.packages += [p for p in WEB_PACKAGES if p not in self.packages]
        super().run()


setup(cmdclass={"build_py": BuildPyWithDashboard})
