"""Build llama-cpp-python once per (version, build flags) into a wheelhouse keyed by both, and print its path.

PyPI ships llama-cpp-python only as an sdist, and its default build uses GGML_NATIVE=ON: the library is compiled
for the CPU it was built on, and pip's wheel cache hands that wheel to the next machine whatever its CPU (on a Xeon
with AMX the native build segfaults in ggml's AMX kernels). This builds instead:

- every x86-64 variant of ggml's CPU backend as a loadable module (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), so
  the library picks the best kernels the running CPU supports at load time (engines/llm/llama_cpp_backend.py
  loads them from the package's lib folder);
- without the AMX variant ("sapphirerapids"): the crash is in its kernels, and the AVX-512 VNNI/BF16 variants
  serve those CPUs instead;
- with `llama_cpp/llama_cpp.py` registering those modules from its own lib folder as it loads the library:
  ggml looks for them only next to the executable and in the working directory, so without this a plain
  `llama_cpp.Llama(...)` (or `python -m llama_cpp.server`) would find no CPU backend.

The wheelhouse folder name carries a hash of the version, the CMake flags and the dropped variants, so a wheel
built with other flags is never handed back; pip's own cache is bypassed (--no-cache-dir). Usage:

    python tools/llama_cpp_wheel.py [--wheelhouse DIR] [--flags portable|native|...]   # prints the wheel's folder
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinned_version() -> str:
    """The llama-cpp-python version pyproject.toml pins (one place to change it)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for d in deps:
        name, sep, version = d.partition("==")
        if name.strip() == "llama-cpp-python" and sep:
            return version.strip()
    raise SystemExit("pyproject.toml does not pin llama-cpp-python==VERSION")


VERSION = pinned_version()

# Named flag sets. `portable` is what `make install` uses; the others exist for bench/llm_builds.py.
FLAG_SETS: dict[str, dict] = {
    "portable": {
        # GGML_BACKEND_DIR (a STRING, or CMake makes it absolute in the build tree) is where the modules are
        # installed, relative to the wheel's root.
        "cmake": ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON",
                  "-DGGML_BACKEND_DIR:STRING=llama_cpp/lib", "-DLLAVA_BUILD=OFF"],
        "drop": ["libggml-cpu-sapphirerapids.so"],
        "patch_loader": True,
    },
    # One fixed instruction set: AVX2/FMA/F16C (what GGML_NATIVE=OFF alone selects). Runs on any x86-64 CPU
    # with AVX2, never uses AVX-512.
    "avx2": {"cmake": ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF"], "drop": []},
    # llama-cpp-python's default: -march=native, AMX included where the build machine has it.
    "native": {"cmake": ["-DGGML_NATIVE=ON", "-DLLAVA_BUILD=OFF"], "drop": []},
    # The same minus AMX: the fastest build this CPU can run, for measuring what portability costs.
    "native-noamx": {
        "cmake": ["-DGGML_NATIVE=ON", "-DLLAVA_BUILD=OFF",
                  "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
                  "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"],
        "drop": [],
    },
}


# Appended to llama_cpp/llama_cpp.py right after it loads libllama.
LOADER_ANCHOR = "_lib = load_shared_library(_lib_base_name, _base_path)\n"
LOADER_PATCH = '''

def _register_cpu_backends() -> None:
    # Added by xemo's portable build: the CPU backend variants lie beside the library, where ggml does not look.
    # The symbols are looked up through libllama's handle, so they are those of the libggml it is linked to
    # (the wheel holds copies, not links, of libggml.so*: loading one by path would be a second registry).
    _lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    if _lib.ggml_backend_reg_count() == 0:
        _lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        _lib.ggml_backend_load_all_from_path(str(_base_path).encode())


_register_cpu_backends()
'''


def build_key(flags: dict) -> str:
    blob = json.dumps({"version": VERSION, "cmake": flags["cmake"], "drop": flags["drop"],
                       "loader": LOADER_PATCH if flags.get("patch_loader") else None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_wheelhouse() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xemo" / "wheelhouse"


def wheel_dir(wheelhouse: Path, name: str) -> Path:
    return wheelhouse / f"llama-cpp-python-{VERSION}-{name}-{build_key(FLAG_SETS[name])}"


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def repack(wheel: Path, drop: list[str], patch_loader: bool) -> list[str]:
    """Rewrite the wheel without the members whose file name is in `drop`, with the loader patch if asked, and
    with a RECORD to match. Returns the dropped members."""
    if not drop and not patch_loader:
        return []
    with zipfile.ZipFile(wheel) as zin:
        infos = zin.infolist()
        record_name = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        kept = [i for i in infos if Path(i.filename).name not in drop and i.filename != record_name]
        dropped = [i.filename for i in infos if Path(i.filename).name in drop]
        tmp = wheel.with_suffix(".tmp")
        rows = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in kept:
                data = zin.read(info)
                if patch_loader and info.filename == "llama_cpp/llama_cpp.py":
                    text = data.decode()
                    if text.count(LOADER_ANCHOR) != 1 or "import ctypes\n" not in text:
                        raise SystemExit("llama_cpp/llama_cpp.py has changed: the loader patch no longer applies")
                    data = text.replace(LOADER_ANCHOR, LOADER_ANCHOR + LOADER_PATCH).encode()
                zout.writestr(info, data)
                rows.append(_record_line(info.filename, data))
            rows.append([record_name, "", ""])
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            zout.writestr(record_name, buf.getvalue())
    tmp.replace(wheel)
    return dropped


def build(name: str, wheelhouse: Path, python: str) -> Path:
    flags = FLAG_SETS[name]
    out = wheel_dir(wheelhouse, name)
    meta = out / "build.json"
    if meta.is_file() and list(out.glob("llama_cpp_python-*.whl")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": " ".join(f'"{a}"' if " " in a else a for a in flags["cmake"]),
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    with tempfile.TemporaryDirectory() as tmp:
        # --no-binary: PyPI has no wheel today, but a future one would be built with unknown flags.
        subprocess.run([python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-binary",
                        "llama-cpp-python", f"llama-cpp-python=={VERSION}", "-w", tmp], check=True, env=env)
        (wheel,) = Path(tmp).glob("llama_cpp_python-*.whl")
        dropped = repack(wheel, flags["drop"], bool(flags.get("patch_loader")))
        with zipfile.ZipFile(wheel) as z:
            libs = sorted(Path(n).name for n in z.namelist() if "/lib/" in n and ".so" in n)
        if name == "portable" and not any(lib.startswith("libggml-cpu-") for lib in libs):
            raise SystemExit(f"the portable build has no CPU backend variants: {libs}")
        target = out / wheel.name
        wheel.replace(target)
    meta.write_text(json.dumps({"version": VERSION, "name": name, "cmake": flags["cmake"], "dropped": dropped,
                                "libs": libs, "wheel": target.name,
                                "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flags", default="portable", choices=sorted(FLAG_SETS))
    ap.add_argument("--wheelhouse", type=Path, default=None, help="default: $XDG_CACHE_HOME/xemo/wheelhouse")
    ap.add_argument("--python", default=sys.executable, help="interpreter whose pip builds the wheel")
    ap.add_argument("--print-dir", action="store_true", help="only print the folder the wheel goes to")
    args = ap.parse_args()
    wheelhouse = args.wheelhouse or default_wheelhouse()
    if args.print_dir:
        print(wheel_dir(wheelhouse, args.flags))
        return
    print(build(args.flags, wheelhouse, args.python))


if __name__ == "__main__":
    main()
