#!/usr/bin/env python3
"""Forward to benches/sweep.py (same arguments, same exit status), so that `python3 sweep.py run`
works from the repository root. See benches/sweep.py for the commands."""
import runpy
import sys
from pathlib import Path

script = Path(__file__).resolve().parent / "benches" / "sweep.py"
sys.argv[0] = str(script)
runpy.run_path(str(script), run_name="__main__")
