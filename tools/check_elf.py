#!/usr/bin/env python3
"""check_elf.py FILE ARCH: exits 0 if FILE is a 64-bit little-endian ELF executable for ARCH
(aarch64 or x86_64), printing what it is; else says what it found and exits 1."""
import sys

MACHINES = {183: "aarch64", 62: "x86_64"}


def main() -> int:
    path, want = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        print(f"{path}: not a 64-bit little-endian ELF file")
        return 1
    machine = MACHINES.get(int.from_bytes(header[18:20], "little"), "unknown")
    if machine != want:
        print(f"{path}: an ELF for {machine}, not {want}")
        return 1
    import os
    print(f"{path}: ELF {machine}, {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
