"""Loading llama-cpp-python: the library, the CPU backend variant it runs on, and what this CPU offers.

`make install` builds llama.cpp with every x86-64 variant of its CPU backend as a loadable module and no AMX
variant (tools/llama_cpp_wheel.py); `llama_cpp` registers the best variant for this CPU as it loads. A plain
source build links its CPU backend instead. Either way a CPU backend must be registered before llama.cpp
initialises, or every model load fails with no clear reason: that is checked here.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path
from types import ModuleType

from engines.errors import ModelError

_lock = threading.Lock()
_ready = False

# The /proc/cpuinfo flags that decide which ggml kernels a CPU can run.
KERNEL_FLAGS = ("sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vbmi",
                "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def llama_cpp_module() -> ModuleType:
    """The `llama_cpp` ctypes module with a CPU backend registered and llama.cpp initialised (once per process)."""
    global _ready
    set_omp_wait()
    try:
        import llama_cpp
    except ImportError as e:  # the source build failed or was skipped
        raise ModelError("llama-cpp-python is not installed; run `make install` or use backend=transformers") from e
    # Its log callback prints to stderr when this logger's level allows; its level map is shifted by one, so
    # ERROR here keeps llama.cpp's warnings and errors and drops the per-load info chatter.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    with _lock:
        if not _ready:
            _require_cpu_backend(llama_cpp)
            llama_cpp.llama_backend_init()
            _ready = True
    return llama_cpp


# Iterations an OpenMP thread spins at a barrier before it sleeps (libgomp's GOMP_SPINCOUNT; roughly 0.1-0.5 ms,
# depending on the CPU's pause instruction).
OMP_SPIN_COUNT = "10000"


def set_omp_wait() -> None:
    """Bound how long llama.cpp's OpenMP threads spin at barriers, unless the operator chose a policy.

    A llama_decode crosses hundreds of barriers. Sleeping at each (OMP_WAIT_POLICY=PASSIVE) costs a futex wake-up
    every time: on 2 cores a 16-token prompt chunk took 1.6x the wall time and more CPU than with a short spin.
    Spinning without a bound (ACTIVE, libgomp's default of about 3 ms) steals the core a descheduled peer or a
    perception thread needs, and decode collapses when the cores are shared (1.8 vs 65 tok/s with 2 threads on
    a loaded 2-core box). A short spin catches a peer that is running and gives the core up soon after when it
    is not. libgomp reads this once, when llama.cpp's library loads.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT


def _require_cpu_backend(llama_cpp: ModuleType) -> None:
    # Through libllama's handle: the registry of the libggml it is linked to (see tools/llama_cpp_wheel.py).
    lib = llama_cpp.llama_cpp._lib
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    if lib.ggml_backend_reg_count() == 0:
        folder = Path(llama_cpp.__file__).resolve().parent / "lib"
        raise ModelError(f"llama.cpp has no CPU backend registered (none in {folder} fits this CPU, or this build "
                         f"does not register its own); CPU flags: {' '.join(cpu_flags()) or 'unknown'}. "
                         "Rebuild it with `make install`.")


def cpu_variant() -> str | None:
    """The CPU backend module this process loaded (e.g. "icelake"), or None for a build that links its backend."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = line.rsplit("/", 1)[-1].strip()
                if name.startswith("libggml-cpu-") and ".so" in name:
                    return name[len("libggml-cpu-"):name.index(".so")]
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or "unknown CPU"


def cpu_flags() -> list[str]:
    """The kernel-relevant flags of this CPU, in KERNEL_FLAGS order."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return [f for f in KERNEL_FLAGS if f in flags]


def _cpuinfo_field(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == key:
                    return v.strip()
    except OSError:
        pass
    return None
