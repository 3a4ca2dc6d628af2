#!/usr/bin/env python3
"""A profile-guided (PGO) release build of the sidecar-lite binary, trained on the load
harness's own targets.

Run it from the workspace root (one command; it installs what is missing):

    python3 benches/load/pgo.py            # writes target/pgo/release/sidecar-lite

then measure it beside the plain release build:

    python3 benches/load/run.py --skip-build --sidecar target/pgo/release/sidecar-lite \\
        --baseline target/release/sidecar-lite --threads 1 --reps 5 \\
        --targets sidecar-1hop,baseline-1hop

The steps: rustup's `llvm-tools` component (its `llvm-profdata` matches rustc's LLVM) is added
when missing; run.py builds the harness's release binaries; sidecar-lite is built instrumented
(`-Cprofile-generate`) into `target/pgo-generate`; `run.py --quick` runs that binary as every
sidecar target (one hop in plaintext, with tracing exported, with its collector down, with the
access log on, and the mTLS pairs, HTTP/2 and HTTP/1.1 between them: outbound and inbound),
`h2c.py --quick` as one hop for HTTP/2 clients, and each sidecar writes its profile when it
stops; `llvm-profdata` merges them; sidecar-lite is built again with `-Cprofile-use` into
`target/pgo`. `target/release` and the committed results are left as they are (the
training's tables go to `target/pgo-training`). Two release builds: about ten minutes on
two cores.

Paths the training does not take (gRPC and HTTP/2 to the upstream, retries after failures,
DNS discovery) are laid out as cold code: still correct, not made faster, possibly a little
slower. The profile belongs to the code it was taken from: build again after any change.

The training stays on 127.0.0.1 (run.py's rules: it stops only the processes it started, by
PID, and is bounded in time).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (the workspace, its builds and its load run)

TARGET = harness.ROOT / "target"
GENERATE_DIR = TARGET / "pgo-generate"
PROFILES = TARGET / "pgo-profiles"
OPTIMIZED_DIR = TARGET / "pgo"
TRAINING_S = 600


def llvm_profdata():
    """rustc's own llvm-profdata, from rustup's `llvm-tools` component (added when missing)."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = next(line.split(": ", 1)[1] for line in subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host: "))
    tool = Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
    if not tool.exists():
        if shutil.which("rustup") is None:
            sys.exit(f"llvm-profdata is missing at {tool}, and there is no rustup to add it: "
                     "install the llvm-profdata of rustc's own LLVM version (`rustc -vV`)")
        harness.log("adding rustup's llvm-tools component (llvm-profdata)")
        subprocess.run(["rustup", "component", "add", "llvm-tools"], check=True)
    if not tool.exists():
        sys.exit(f"llvm-profdata is still missing at {tool} after adding llvm-tools")
    return tool


def build_sidecar(target_dir, rustflag):
    """sidecar-lite in release mode into `target_dir`, with `rustflag` added to whatever
    rustflags cargo's configuration sets (`--config` adds to them, where a RUSTFLAGS variable
    would replace them); the binary's path."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    env.pop("RUSTFLAGS", None)
    subprocess.run(["cargo", "build", "--release", "-p", "sidecar-lite", "--bin", "sidecar-lite",
                    "--config", f"build.rustflags=[{json.dumps(rustflag)}]"],
                   cwd=harness.ROOT, env=env, check=True)
    return Path(target_dir) / "release" / "sidecar-lite"


def train(instrumented):
    """The harness's quick runs, HTTP/1.1 and HTTP/2 from the client, with `instrumented` as
    every sidecar; the profiles they wrote."""
    shutil.rmtree(PROFILES, ignore_errors=True)
    PROFILES.mkdir(parents=True)
    for script, *flags in (("run.py", "--skip-build"), ("h2c.py",)):
        harness.log(f"training: {script} --quick with the instrumented binary")
        subprocess.run([sys.executable, str(Path(__file__).resolve().parent / script), "--quick",
                        *flags, "--sidecar", str(instrumented),
                        "--results", str(TARGET / "pgo-training")],
                       cwd=harness.ROOT, check=True, timeout=TRAINING_S)
    profiles = sorted(PROFILES.glob("*.profraw"))
    if not profiles:
        sys.exit(f"no profile in {PROFILES}: did the sidecars stop cleanly?")
    return profiles


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    profdata_tool = llvm_profdata()
    harness.ensure_tools()
    harness.build()
    harness.log("building sidecar-lite instrumented for profiling")
    # Each sidecar process writes its profile into PROFILES when it exits.
    instrumented = build_sidecar(GENERATE_DIR, f"-Cprofile-generate={PROFILES}")
    profiles = train(instrumented)
    merged = TARGET / "pgo.profdata"
    subprocess.run([str(profdata_tool), "merge", "-o", str(merged), *map(str, profiles)],
                   check=True)
    harness.log(f"merged {len(profiles)} profile file(s); building sidecar-lite with them")
    optimized = build_sidecar(OPTIMIZED_DIR, f"-Cprofile-use={merged}")
    print(optimized)


if __name__ == "__main__":
    main()
