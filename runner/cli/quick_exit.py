"""A command's process ends without the interpreter's last garbage collections over everything
TensorFlow, Keras and MLflow left in memory.

At exit, CPython tears the modules down with full collections that walk every object still
alive: for a process that imported TensorFlow that is 1.3 to 2 CPU-seconds (measured on a
2-core machine), spent after the run's last line is printed, at every `python -m runner`.
Freezing the collector once every other exit handler has run skips that walk; files are still
closed, logs flushed and objects freed by their reference counts, as at any exit.
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def skip_final_collection() -> None:
    """Call first thing in a command's entry point (again in a job, for the processes of
    launchers that run jobs elsewhere; once per process counts). Exit handlers run in reverse
    order of registration: those registered later (MLflow's, TensorFlow's, Hydra's) run before
    this one, with the collector on; those registered earlier, at the import of the standard
    library's logging or multiprocessing, flush and join after it, which needs no collector."""
    global _registered
    if not _registered:
        atexit.register(_freeze)
        _registered = True


def _freeze() -> None:
    gc.disable()
    gc.freeze()  # everything alive now is left out of the teardown's collections
