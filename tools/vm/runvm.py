"""Runs a shell script inside the kernel VM and returns its status and output.

The VM boots Debian's stock kernel (prepared by scripts/build-kernel-vm.sh)
under QEMU, sees the host's / read-only at the same paths (so the project's
virtualenv and iproute2 run unchanged) and exchanges files with the host
through a read-write control folder mounted at /qsgw-ctl. QEMU runs under
software emulation unless `accel` says otherwise: the machines we test on
offer only a nested KVM that stock kernels cannot use.

    python tools/vm/runvm.py 'uname -r; modprobe esp4 && echo esp ok'
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("QSGW_CACHE", "/var/cache/qsgw"))
VM_DIR = CACHE / "vm"


@dataclass(frozen=True)
class VmResult:
    status: int
    output: str
    console: str
    files: dict[str, bytes]  # what the command left in /qsgw-ctl


def tsc_khz() -> int:
    """The host's TSC rate: microvm under TCG hangs calibrating it otherwise."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return int(float(line.split(":")[1]) * 1000)
    return 2_000_000


GUEST_MODULES = (
    "esp4 esp6 xfrm_user xfrm_interface veth tun aesni_intel"
    " ghash_clmulni_intel gcm seqiv echainiv ctr ghash_generic authenc"
    " authencesn cbc hmac sha256_generic sha512_generic chacha20poly1305"
    " chacha_x86_64 poly1305_x86_64 drbg jitterentropy_rng"
)


def prologue() -> str:
    """Shell lines that load the guest kernel's modules from the package.

    Without udev and with the modules outside /lib/modules, the kernel
    cannot load crypto templates on demand: they are loaded up front.
    """
    kernel = VM_DIR / "kernel"
    return f"modprobe -d {kernel} -a {GUEST_MODULES} 2>/dev/null\n"


def run_in_vm(
    script: str,
    *,
    timeout: float = 900,
    memory_mb: int = 2048,
    cpus: int = 2,
    accel: str = "tcg",
) -> VmResult:
    with tempfile.TemporaryDirectory(prefix="qsgw-vm-") as ctl:
        Path(ctl, "command.sh").write_text(prologue() + script)
        command = _qemu_command(ctl, memory_mb, cpus, accel)
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            console, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            console, _ = proc.communicate()
            raise TimeoutError(
                f"VM did not finish within {timeout:.0f} s; console tail:\n"
                + console.decode(errors="replace")[-3000:]
            ) from None
        status_file = Path(ctl, "status")
        output_file = Path(ctl, "output")
        status = int(status_file.read_text()) if status_file.exists() else -1
        output = output_file.read_text(errors="replace") if output_file.exists() else ""
        files = {
            p.name: p.read_bytes()
            for p in Path(ctl).iterdir()
            if p.is_file() and p.name not in ("command.sh", "status", "output")
        }
        return VmResult(status, output, console.decode(errors="replace"), files)


def _qemu_command(ctl: str, memory_mb: int, cpus: int, accel: str) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise RuntimeError("qemu-system-x86_64 missing: run scripts/bootstrap.sh")
    append = (
        "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init "
        f"tsc_early_khz={tsc_khz()} tsc=reliable"
    )
    fs = "virtio-9p-device"
    return [
        qemu,
        "-M", "microvm,rtc=on",
        "-accel", accel,
        "-cpu", "max",
        "-smp", str(cpus),
        "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(VM_DIR / "vmlinux"),
        "-initrd", str(VM_DIR / "initramfs.cpio"),
        "-append", append,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
        "-device", f"{fs},fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=ctl,path={ctl},security_model=none",
        "-device", f"{fs},fsdev=ctl,mount_tag=ctl",
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", help="shell script text to run in the VM")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--console", action="store_true", help="print the console")
    args = parser.parse_args()
    result = run_in_vm(args.script, timeout=args.timeout)
    if args.console:
        print(result.console)
    print(result.output, end="")
    return result.status


if __name__ == "__main__":
    sys.exit(main())
