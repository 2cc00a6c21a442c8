"""Builds the kernel-VM boot files from an unpacked Debian kernel package.

- `vmlinux`: the uncompressed ELF kernel found inside `vmlinuz`, which QEMU
  boots directly through its PVH entry (decompressing under emulation costs
  seconds).
- `initramfs.cpio`: busybox and the modules needed to mount the host's root
  over virtio-9p, plus `init` (see `init.sh` beside this file).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import shutil
import subprocess
import zlib
from pathlib import Path

BOOT_MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
)
COMPRESSED_MAGICS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The first compressed stream in `vmlinuz` that unpacks to an ELF."""
    for magic, kind in COMPRESSED_MAGICS:
        start = vmlinuz.find(magic)
        while start != -1:
            image = _decompress(kind, vmlinuz[start:])
            if image.startswith(b"\x7fELF"):
                return image
            start = vmlinuz.find(magic, start + 1)
    raise SystemExit("prepare: no ELF kernel inside vmlinuz")


def _decompress(kind: str, data: bytes) -> bytes:
    try:
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(data)
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
        proc = subprocess.run(
            ["zstd", "-dc"], input=data, capture_output=True, check=False
        )
        return proc.stdout
    except (lzma.LZMAError, zlib.error, OSError, EOFError):
        return b""


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for `wanted` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    ordered: list[str] = []

    def visit(path: str) -> None:
        for dep in deps[path]:
            visit(dep)
        if path not in ordered:
            ordered.append(path)

    for name in wanted:
        if name in by_name:  # built in, or not in this kernel: nothing to load
            visit(by_name[name])
    return [modules_dir / p for p in ordered]


def build_initramfs(kernel_root: Path, release: str, out: Path) -> None:
    tree = out / "initramfs"
    for d in ("bin", "dev", "proc", "sys", "host", "rw", "newroot", "modules"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("prepare: busybox missing")
    shutil.copy(busybox, tree / "bin" / "busybox")
    (tree / "bin" / "sh").symlink_to("busybox")

    modules = module_order(kernel_root / "lib/modules" / release, BOOT_MODULES)
    names = []
    for i, module in enumerate(modules):
        name = f"{i:02d}-{module.name}"
        _copy_module(module, tree / "modules" / name)
        names.append(name.removesuffix(".xz").removesuffix(".zst"))
    (tree / "modules" / "order").write_text("\n".join(names) + "\n")

    init = tree / "init"
    shutil.copy(Path(__file__).with_name("init.sh"), init)
    init.chmod(0o755)
    files = subprocess.run(
        ["find", "."], cwd=tree, capture_output=True, check=True, text=True
    ).stdout
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=tree,
        input=files.encode(),
        capture_output=True,
        check=True,
    ).stdout
    (out / "initramfs.cpio").write_bytes(archive)
    shutil.rmtree(tree)


def _copy_module(source: Path, target: Path) -> None:
    data = source.read_bytes()
    if source.suffix == ".xz":
        data = lzma.decompress(data)
        target = target.with_suffix("")
    elif source.suffix == ".zst":
        data = subprocess.run(
            ["zstd", "-dc"], input=data, capture_output=True, check=True
        ).stdout
        target = target.with_suffix("")
    elif source.suffix == ".gz":
        data = gzip.decompress(data)
        target = target.with_suffix("")
    target.write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel-root", type=Path, required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vmlinuz = args.kernel_root / "boot" / f"vmlinuz-{args.release}"
    (args.out / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    build_initramfs(args.kernel_root, args.release, args.out)


if __name__ == "__main__":
    main()
