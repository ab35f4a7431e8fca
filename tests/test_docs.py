"""The README and the guides in docs/ as a newcomer meets them: every relative link and image resolves
(to a file, and to a heading where the link names one), every `magi ...` command they show parses
(`magi <command> --help` exits 0, the flags shown are known to that command's parser, and a command
shown in a code block parses whole), and the README's two commands stand on lines of their own.

The commands are parsed in this process by the commands' own parsers (`magi.cli.main` with argparse's
`parse_args` stopped right after parsing), so nothing runs and the check takes seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target), ![alt](target)
IMG = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"")
FENCE = re.compile(r"^```(.*?)$(.*?)^```", re.S | re.M)
SHELL = ("", "sh", "bash", "shell", "console")  # code blocks whose lines are commands
INLINE = re.compile(r"`([^`\n]+)`")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [m.group(1) for m in LINK.finditer(text)] + [m.group(1) for m in IMG.finditer(text)]


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    for guide in ("getting-started.md", "training.md", "own-videos.md", "sampling.md", "evaluation.md",
                  "reproduction.md", "world-model.md", "architecture.md", "decisions.md", "benchmarks.md",
                  "design.md", "text.md", "export.md"):
        assert guide in names, f"docs/{guide} is missing"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif not file.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


# --------------------------------------------------------------------------------------------------
# The commands shown


def _commands_in(text: str) -> list[str]:
    """The lines of a shell code block that run `magi` (also as .venv/bin/magi or torchrun -m magi.train)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            part = re.sub(r"\s#.*$", "", part).strip()
            if re.search(r"(^|[\s/])magi\s|-m magi\.train\s", part + " "):
                out.append(part)
    return out


def shown_commands() -> list[tuple[str, str, bool]]:
    """(page, command, whole) for every `magi` command on the pages: whole for a line in a code block (it
    must parse as it stands), not for an inline mention (only its command and flags are checked)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for language, block in FENCE.findall(text):
            if language.strip() in SHELL:
                found += [(_rel(page), c, True) for c in _commands_in(block)]
        for span in INLINE.findall(FENCE.sub("", text)):
            # a command, not a message (`magi train: warning: ...`) or a placeholder (`magi <command>`)
            if re.match(r"^(\.venv/bin/)?magi (-|[a-z][a-z-]*(\s|$))", span):
                found.append((_rel(page), span, False))
    return found


def argv_of(command: str) -> list[str]:
    """The arguments `magi.cli.main` gets for a shown command, placeholders and all."""
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words.pop(0)
    if "-m" in words and words[words.index("-m") + 1] == "magi.train":  # torchrun ... -m magi.train ARGS
        return ["train", *words[words.index("-m") + 2:]]
    i = next(i for i, w in enumerate(words) if w == "magi" or w.endswith("/magi"))
    return [w for w in words[i + 1:] if w not in ("...", "…")]


class _Parsed(BaseException):  # not an Exception: nothing in a command's main may swallow it
    def __init__(self, parser: argparse.ArgumentParser, namespace=None):
        self.parser, self.namespace = parser, namespace


@contextlib.contextmanager
def parse_only(parse: bool):
    """Stop every command at its top-level `parse_args`: right after parsing (parse=True) or before."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Parsed(self, original(self, args, namespace) if parse else None)

    argparse.ArgumentParser.parse_args = stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def run_cli(argv: list[str], parse: bool = True):
    """`magi.cli.main(argv)` up to the parse: (exit status or None, parser, stdout + stderr)."""
    from magi import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), parse_only(parse):
        try:
            return cli.main(argv), None, buf.getvalue()
        except _Parsed as p:
            return None, p.parser, buf.getvalue()
        except SystemExit as e:
            return e.code, None, buf.getvalue()


def known_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The option strings `parser` knows, with those of the sub-command argv names (magi eval fvd ...)."""
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in argv:
                if word in action.choices:
                    flags |= known_flags(action.choices[word], argv)
                    break
    return flags


def command_path(argv: list[str]) -> list[str]:
    """The command and its sub-command, as `--help` takes them: ["eval", "fvd"], ["play"]."""
    from magi import cli

    path = argv[:1]
    _, parser, _ = run_cli(argv[:1] + ["--help"], parse=False)
    for action in (parser._actions if parser else []):
        if isinstance(action, argparse._SubParsersAction):
            path += [w for w in argv[1:] if w in action.choices][:1]
    assert path[0] in cli.COMMANDS, f"magi {path[0]}: no such command"
    return path


COMMANDS = shown_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 30 and any(whole for _, _, whole in COMMANDS)


@pytest.mark.parametrize("page,command,whole", COMMANDS,
                         ids=[f"{p}:{c[:60]}" for p, c, _ in COMMANDS])
def test_every_magi_command_shown_parses(page, command, whole):
    argv = argv_of(command)
    assert argv, f"{page}: `{command}` names no command"
    if argv[0] in ("--version", "-V", "--help", "-h"):
        assert run_cli(argv)[0] == 0
        return
    path = command_path(argv)
    status, _, text = run_cli(path + ["--help"])
    assert status == 0, f"{page}: `magi {' '.join(path)} --help` exited {status}: {text}"
    _, parser, _ = run_cli(argv, parse=False)
    assert parser is not None, f"{page}: `{command}`: magi {argv[0]} built no parser"
    flags = known_flags(parser, argv)
    own = argv[:argv.index("--")] if "--" in argv else argv  # after `--`: arguments passed on (magi bench)
    unknown = [w.split("=")[0] for w in own if w.startswith("--") and w.split("=")[0] not in flags]
    assert not unknown, f"{page}: `{command}`: magi {' '.join(path)} does not know {unknown}"
    if whole:
        status, parser, text = run_cli(argv)
        assert parser is not None, f"{page}: `{command}` does not parse (exit {status}): {text.strip()}"


def test_the_readme_is_one_screen_with_its_two_commands_on_lines_of_their_own():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    stripped = [line.strip() for line in lines]
    for command in ("make demo", "make test", "make install"):
        assert command in stripped, f"README.md: `{command}` is not a line of its own"


def test_make_bench_names_what_it_skips_on_a_plain_cpu_machine(monkeypatch, capsys):
    """`make bench` on a CPU without a DIAMOND checkout: gpu_check and diamond_compare are skipped with the
    reason, every other benchmark runs (asked for by name, a skipped one is an error that says why)."""
    import torch

    from magi import bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("DIAMOND_DIR", raising=False)
    assert bench.main(["--list"]) == 0
    listed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert listed.keys() == set(bench.available())
    assert listed["gpu_check"].startswith("skipped: needs a CUDA device")
    assert listed["diamond_compare"].startswith("skipped: needs a checkout of github.com/eloialonso/diamond")
    assert all(v == "runs" for k, v in listed.items() if k not in ("gpu_check", "diamond_compare"))
    assert bench.main(["gpu_check"]) == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert bench.skip_reason("gpu_check", ["--cpu-smoke"]) is None  # the script's own CPU smoke test runs
