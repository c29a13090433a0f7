"""What the compiler makes of each kernel, without a GPU: registers and spills (ptxas, through
NVRTC) and, where a `cuobjdump` is found, the instruction mix of the machine code.

    python benchmarks/kernel_report.py                    # every specialisation, sm_90
    python benchmarks/kernel_report.py --arch sm_80 --files solve.cu gram.cu

Counts are per kernel, over its whole code (loops counted once): they show what an inner
loop issues (e.g. LDS.128, 128-bit shared loads; LDGSTS, cp.async copies from global to
shared memory; STL/LDL, local-memory spills), not how often
it runs. `cuobjdump` comes from the CUDA toolkit or the `nvidia-cuda-cuobjdump` and
`nvidia-cuda-nvdisasm` wheels (set CUOBJDUMP to its path); without it only the ptxas
figures are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als.backends import _kernels  # noqa: E402

#: Instruction classes counted in the machine code (LDS counts every shared load, LDS.128
#: the 128-bit ones again; LDGSTS the copies from global to shared memory, cp.async;
#: ATOM/RED every global or shared atomic).
CLASSES = ("FFMA", "DFMA", "LDS", "LDS.128", "STS", "LDG", "LDGSTS", "STG", "SHFL", "BAR",
           "ATOM/RED", "STL", "LDL")
_PLAIN = {"FFMA", "DFMA", "LDS", "STS", "LDG", "LDGSTS", "STG", "SHFL", "BAR", "STL", "LDL"}
_ATOMIC = {"ATOM", "ATOMG", "ATOMS", "RED", "REDG"}


def classify(opcode: str) -> list[str]:
    """The CLASSES an opcode such as ``LDS.128`` or ``REDG.E.ADD.F32`` counts towards."""
    base = opcode.split(".")[0]
    found = [base] if base in _PLAIN else []
    if opcode.startswith("LDS.128"):
        found.append("LDS.128")
    if base in _ATOMIC:
        found.append("ATOM/RED")
    return found


def find_cuobjdump() -> str | None:
    if os.environ.get("CUOBJDUMP"):
        return os.environ["CUOBJDUMP"]
    found = shutil.which("cuobjdump")
    if found:
        return found
    for folder in sys.path:  # pip's nvidia-cuda-cuobjdump wheel
        for candidate in Path(folder).glob("nvidia/*/bin/cuobjdump"):
            return str(candidate)
    return None


def instruction_mix(cubin: bytes, cuobjdump: str) -> dict[str, Counter]:
    """Mangled kernel name -> counts of CLASSES in its SASS."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        sass = subprocess.run([cuobjdump, "-sass", file.name], capture_output=True,
                              text=True, check=True).stdout
    mix: dict[str, Counter] = {}
    current = None
    for line in sass.splitlines():
        function = re.match(r"\s*Function : (\S+)", line)
        if function:
            current = mix.setdefault(function.group(1), Counter())
            continue
        op = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
        if current is not None and op is not None:
            current.update(classify(op.group(1)))
    return mix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--cuda", type=int, default=None,
                        help="CUDA release of the NVRTC to use (default: the newest installed)")
    parser.add_argument("--files", nargs="+", default=sorted(_kernels.SPECIALISATIONS),
                        choices=sorted(_kernels.SPECIALISATIONS))
    args = parser.parse_args(argv)
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        print("no cuobjdump found (CUDA toolkit, or pip install nvidia-cuda-cuobjdump "
              "nvidia-cuda-nvdisasm): ptxas figures only\n")
    header = f"{'kernel':40} {'regs':>5} {'spill':>6}"
    if cuobjdump:
        header += "".join(f" {c:>8}" for c in CLASSES)
    print(header)
    for file in args.files:
        result = _kernels.nvrtc_compile(file, args.arch, cuda=args.cuda, resource_usage=True,
                                        keep_cubin=cuobjdump is not None)
        if not result["ok"]:
            print(f"{file}: compilation failed\n{result['log']}")
            return 1
        mix = instruction_mix(result["cubin"], cuobjdump) if cuobjdump else {}
        for name, mangled in result["lowered"].items():
            usage = result["usage"].get(name, {})
            line = f"{name:40} {usage.get('registers', '?'):>5} {usage.get('spill_bytes', '?'):>6}"
            if cuobjdump:
                counts = mix.get(mangled, Counter())
                line += "".join(f" {counts[c]:>8}" for c in CLASSES)
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
