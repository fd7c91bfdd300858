"""Start-up cost of the cheap commands (`diag --version`, `--help`, `models`, `books`) next to a
bare Python start and a bare `import torch`, measured in this process's subprocesses (median of
--repeat runs, wall and CPU), with the heavy modules each command imported.

    python benchmarks/bench_cli.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "sklearn", "scipy", "plotly", "pandas")
COMMANDS = {
    "python (nothing)": "pass",
    "import torch": "import torch",
    **{
        f"diag {' '.join(argv)}": (
            "import sys, io, contextlib\nfrom lminf_diag.cli.main import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    main({argv!r})\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
        )
        for argv in (["--version"], ["--help"], ["models"], ["books"])
    },
}


def _once(code: str) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "-")
    return wall, cpu, heavy or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = {}
    for name, code in COMMANDS.items():
        runs = [_once(code) for _ in range(args.repeat)]
        rows[name] = {
            "wall_s": round(statistics.median(r[0] for r in runs), 3),
            "cpu_s": round(statistics.median(r[1] for r in runs), 3),
            "heavy_imports": runs[0][2],
        }
    torch_cpu = rows["import torch"]["cpu_s"]
    for row in rows.values():
        row["cpu_vs_import_torch"] = round(row["cpu_s"] / torch_cpu, 3) if torch_cpu else None
    width = max(len(n) for n in rows)
    print(f"{'command'.ljust(width)}  wall s  cpu s  cpu / import torch  heavy imports")
    for name, row in rows.items():
        print(f"{name.ljust(width)}  {row['wall_s']:6.2f}  {row['cpu_s']:5.2f}  {row['cpu_vs_import_torch']:18.2f}  "
              f"{row['heavy_imports']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
