"""`python -m tools.cpu_profile OUT MODULE`: runs `python -m MODULE` under cProfile timed by CPU time.

The benches' fallback where py-spy is not installed (BENCH_PROFILE=<dir>). Profiling is off until
SIGUSR1; SIGUSR2 turns it off and writes the stats so far to OUT (pstats format). A bench profiles its
measured rows only, not start-up (imports, tokenizer tables), and gets its stats whatever way the
service later ends (uvicorn re-raises SIGTERM after its shutdown, so no `finally` runs). The clock is
time.process_time, not cProfile's default wall clock: on a shared machine a wall clock charges a
function for every moment the process sat preempted. cProfile's own overhead inflates every figure
(roughly 2x): read the ranking, not the milliseconds.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
import time
import types


def main() -> None:
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profile = cProfile.Profile(time.process_time)

    def switch(signum: int, _frame: types.FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            profile.enable()
        else:
            profile.disable()
            profile.dump_stats(out + ".part")
            os.replace(out + ".part", out)  # whoever waits for OUT never reads half a file

    signal.signal(signal.SIGUSR1, switch)
    signal.signal(signal.SIGUSR2, switch)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
