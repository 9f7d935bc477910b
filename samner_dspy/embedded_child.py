"""llama.cpp's OpenAI-compatible server, leaving when the process that started it is gone.

A killed annotation or evaluation (SIGKILL included) runs no clean-up, and its server, holding 1-3 GB,
would live on as an orphan; so the server watches its parent and exits with it. It also decodes greedy,
grammar-constrained requests with :mod:`samner_dspy.embedded_sampling` (the same tokens, about twice as fast),
and with ``--samner_prefix_dir DIR`` keeps evaluated prompts on disk (:mod:`samner_dspy.embedded_prefixes`).

    python -m samner_dspy.embedded_child [--samner_prefix_dir DIR] --model model.gguf ...   # then llama_cpp.server's
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def _exit_when_orphaned(parent: int, interval_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(0)


def main() -> None:
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    from samner_dspy.embedded_sampling import install

    install()  # greedy decoding under a grammar without scanning the whole vocabulary per token
    args = sys.argv[1:]
    if args[:1] == ["--samner_prefix_dir"]:
        from samner_dspy import embedded_prefixes

        embedded_prefixes.install(embedded_prefixes.PrefixStore(args[1]))
        args = args[2:]
    sys.argv = ["llama_cpp.server", *args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
