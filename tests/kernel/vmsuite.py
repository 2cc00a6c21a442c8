"""Running the guest test files inside one boot of the kernel VM."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "vm"))

from runvm import run_in_vm  # noqa: E402


@dataclass(frozen=True)
class GuestCase:
    outcome: str  # "passed", "failed", "skipped"
    detail: str


def guest_suite(files: list[str], timeout: float) -> dict[str, GuestCase]:
    """Runs the guest test files with pytest inside one VM boot."""
    subprocess.run([str(ROOT / "scripts" / "build-kernel-vm.sh")], check=True)
    python = Path(sys.executable)
    paths = " ".join(str(ROOT / f) for f in files)
    script = (
        f"cd {ROOT}\n"
        f"{python} -m pytest -p no:cacheprovider -q -o addopts= "
        f"--junitxml=/qsgw-ctl/junit.xml {paths}\n"
    )
    result = run_in_vm(script, timeout=timeout)
    report = result.files.get("junit.xml")
    if report is None:
        pytest.fail(
            "the guest test run left no report; its output:\n"
            + result.output[-4000:]
            + "\nconsole:\n"
            + result.console[-2000:]
        )
    cases = parse_junit(report)
    if not cases:
        pytest.fail(
            "the guest test run reported no test case; its output:\n"
            + result.output[-4000:]
        )
    return cases


def parse_junit(report: bytes) -> dict[str, GuestCase]:
    cases: dict[str, GuestCase] = {}
    for case in ET.fromstring(report).iter("testcase"):
        name = case.get("name", "")
        problem = next(
            (c for c in case if c.tag in ("failure", "error", "skipped")), None
        )
        if problem is None:
            cases[name] = GuestCase("passed", "")
        else:
            outcome = "skipped" if problem.tag == "skipped" else "failed"
            detail = (problem.get("message") or "") + "\n" + (problem.text or "")
            cases[name] = GuestCase(outcome, detail)
    return cases


def assert_guest_passed(case: str, cases: dict[str, GuestCase]) -> None:
    """The guest case ran in the VM and passed; its failure text if not."""
    assert case in cases, (
        f"the guest run did not report {case}; it reported {sorted(cases)}"
    )
    outcome = cases[case]
    assert outcome.outcome == "passed", outcome.detail
