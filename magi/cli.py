"""The `magi` command: one entry point, each subcommand owned by the module that implements it.

Every subcommand module exposes `main(argv: list[str]) -> int | None` with its own argparse, so
`magi train ...` and `python -m magi.train ...` (and `torchrun -m magi.train ...`) take the same
arguments. `magi --version` (also `magi COMMAND --version`) prints the version; Ctrl+C, at any
moment, ends a command with one line and exit status 130 (128 + SIGINT), never a traceback; an output
that cannot be written (read-only, full) ends it with one line naming the path, exit 2.
"""

from __future__ import annotations

import importlib
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl+C

COMMANDS = {
    "train": ("magi.train", "train a model from a YAML config (also: torchrun -m magi.train)"),
    "sample": ("magi.sample", "generate videos from a checkpoint"),
    "eval": ("magi.evaluate.cli", "evaluate a checkpoint (FVD, prediction metrics)"),
    "cache-latents": ("magi.data.latents", "encode a dataset once into a latent cache"),
    "data": ("magi.data.check", "dataset tools: `magi data check ROOT`"),
    "demo": ("magi.demo", "the CPU demo: sample from the shipped checkpoint, train the tiny model"),
    "tokenizer": ("magi.world.tokenizer", "train / export a frame tokenizer (a small AutoencoderKL) on recordings"),
    "bench": ("magi.bench", "run the benchmark scripts in benchmarks/"),
    "play": ("magi.play.server", "play an action-conditioned world model in the browser"),
    "export": ("magi.export.cli", "export a world model: ONNX graphs (onnx), a static page that plays it (web)"),
    "serve-web": ("magi.export.serve", "serve a `magi export web` folder with the headers that enable threads"),
}


def usage() -> str:
    lines = ["usage: magi <command> [args...]  |  magi --version", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def version() -> str:
    from magi import __version__

    return f"magi {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "-V") or (argv[0] in COMMANDS and "--version" in argv[1:]):
        print(version())  # as argparse's version action: wherever it stands, nothing else runs
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"magi: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from magi.errors import one_line_warnings

    try:
        with one_line_warnings(f"magi {name}"):
            module = importlib.import_module(COMMANDS[name][0])
            return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C does not break the message
        print(f"\nmagi {name}: interrupted (Ctrl+C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # an output folder that is read-only, full, not ours: the user's to fix
        from magi.errors import WRITE_ERRNOS, fail, write_failure

        if e.errno not in WRITE_ERRNOS:
            raise
        return fail(f"magi {name}", write_failure(e))


if __name__ == "__main__":
    sys.exit(main())
