"""The documentation is tested: ``mkdocs build --strict`` passes, and every fenced code block in
``docs/`` and ``README.md`` is run or checked against the real thing.

Each block is preceded by a marker, an HTML comment that MkDocs and GitHub do not show::

    <!-- check: KIND [OPTION ...] -->

and a block without one fails the test. The kinds, and what checks each:

``snippet``
    The block's body is only ``--8<-- "path"`` lines (``pymdownx.snippets``, which fails the
    build on a missing file): code included from a file that the suite runs — a test file, or
    a file a test names (``examples/*.py``, ``deploy/...``).
``python``
    Run as a program in a fresh interpreter; it must exit 0 (blocks assert what they show).
    With ``server``: a real ``sluiceway serve`` is running, and ``127.0.0.1:8000`` in the
    block is replaced by its address (``ws://`` too).
``shell``
    Each command runs in bash against that same server, in the directory it runs in (so
    ``demo-data`` and ``serve`` share ``sluiceway.db``); ``uv run X`` runs the environment's
    ``X``; ``curl`` must get a 2xx (``curl -N``, a stream that does not end, is read for a
    moment).
``cli``
    Commands checked without running them: a ``sluiceway`` command line is parsed by the
    real command (unknown options, arguments or choices fail); ``curl`` lines must name a
    route of the server's app with that method; ``python bench/x.py --flag`` needs the file and
    each flag in it; ``pip install "sluiceway[extra]"`` the extras; ``export SLUICEWAY_X=``
    a setting ``x``; ``uv run tool`` an installed tool; paths under ``deploy/`` must exist.
``output NAME``
    Output shown for illustration, re-derived by ``derive_NAME`` below and compared with the
    block (event ids, which are random, compared by shape).
``js``
    A browser module: ``node --check`` parses it, and every name it imports from
    ``/static/sluiceway.js`` is exported by the shipped ``sluiceway.js``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serverproc import ServerProcess

from sluiceway.hub import Hub, HubConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*check:\s*(?P<kind>[a-z]+)(?P<options>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[^`]*)$")
KINDS = {"snippet", "python", "shell", "cli", "output", "js"}
LOCAL = "127.0.0.1:8000"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    kind: str | None
    options: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().split("\n")
    index = 0
    previous = ""
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        start = index
        indent, fence = opened["indent"], opened["fence"]
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index][len(indent) :] if lines[index].strip() else "")
            index += 1
        marker = MARKER.match(previous)
        yield Block(
            page=page,
            line=start + 1,
            lang=opened["lang"].strip(),
            body="\n".join(body) + "\n",
            kind=marker["kind"] if marker else None,
            options=tuple(marker["options"].split()) if marker else (),
        )
        previous = ""
        index += 1


ALL = [block for page in PAGES for block in blocks(page)]


def by_kind(kind: str) -> list[Block]:
    return [block for block in ALL if block.kind == kind]


def ids(found: list[Block]) -> list[str]:
    return [block.name for block in found]


# -- the rule ------------------------------------------------------------------------------


def test_every_block_is_checked() -> None:
    unmarked = [block.name for block in ALL if block.kind not in KINDS]
    assert unmarked == [], "code blocks without a <!-- check: KIND --> marker"
    assert len(ALL) > 40


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """A broken link, a page missing from the nav, a ``:::`` reference to a name that is gone,
    a missing snippet: each fails the build."""
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "reference" / "hub" / "index.html").is_file()
    assert "Google" not in (tmp_path / "index.html").read_text()  # font: false


def test_nothing_refers_outside_the_repository() -> None:
    for page in PAGES:
        text = page.read_text()
        # Any relative path in the prose (a link or not) that climbs out of the repository; code
        # blocks are run or checked on their own (one links an nginx site, ../sites-available).
        prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
        for climbing in re.findall(r"(?:\.\./)+[\w.-]+", prose):
            from_page = (page.parent / climbing).resolve()
            assert from_page.is_relative_to(ROOT), (page, climbing)
            if not from_page.exists():  # no path of ours: read from the repository's root too
                assert (ROOT / climbing).resolve().is_relative_to(ROOT), (page, climbing)
        for target in re.findall(r"\]\(([^)#]+)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).resolve().is_relative_to(ROOT), (page, target)
            assert (page.parent / target).exists(), (page, target)


# -- snippet ------------------------------------------------------------------------------


def run_by_the_suite(path: str) -> bool:
    if path.startswith("tests/"):
        return True
    names = (Path(path).name, f'"{Path(path).stem}"')  # a file, or an example by its name
    tests = [t for t in (ROOT / "tests").glob("test_*.py") if t.name != "test_docs.py"]
    return any(name in test.read_text() for test in tests for name in names)


@pytest.mark.parametrize("block", by_kind("snippet"), ids=ids(by_kind("snippet")))
def test_snippet(block: Block) -> None:
    lines = [line for line in block.body.splitlines() if line.strip()]
    assert lines
    for line in lines:
        found = re.fullmatch(r'--8<-- "([^":]+)(:[\w-]+)?"', line.strip())
        assert found, f"{block.name}: a snippet block holds only --8<-- lines: {line!r}"
        assert (ROOT / found[1]).is_file(), found[1]
        assert run_by_the_suite(found[1]), f"{found[1]} is run by no test"


# -- python and shell, against a real server ----------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sluiceway-docs-") as name:
        yield Path(name)


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        env={
            # serve runs "in" workdir: the database and files the shell blocks write there.
            "SLUICEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'sluiceway.db'}",
            "SLUICEWAY_FILES_DIR": str(workdir / "files"),
            "SLUICEWAY_WS_PUBLISH_CHANNELS": '["chat:*"]',
        }
    ).start()
    yield proc
    proc.stop()


def localize(text: str, server: ServerProcess | None) -> str:
    return text.replace(LOCAL, f"127.0.0.1:{server.port}") if server else text


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}


def run_python(block: Block, workdir: Path, server: ServerProcess | None) -> None:
    script = workdir / f"block_{block.line}.py"
    script.write_text(localize(block.body, server))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 0, f"{block.name}\n{done.stdout}\n{done.stderr}"


PYTHON = by_kind("python")


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python(block: Block, request: pytest.FixtureRequest, workdir: Path) -> None:
    server = request.getfixturevalue("server") if "server" in block.options else None
    run_python(block, workdir, server)


def commands(body: str) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            found.append(stripped)
    return found


SHELL = by_kind("shell")


@pytest.mark.parametrize("block", SHELL, ids=ids(SHELL))
def test_shell(block: Block, server: ServerProcess, workdir: Path) -> None:
    for command in commands(localize(block.body, server)):
        line = re.sub(r"\buv run (\w)", lambda m: f"{BIN}/{m[1]}", command)
        streaming = " -N " in f" {line} "
        if line.startswith("curl "):
            line = (
                "curl -sS --fail-with-body --max-time " + ("1 " if streaming else "10 ") + line[5:]
            )
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=workdir,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            env=clean_env(),
        )
        accepted = {0, 28} if streaming else {0}  # 28: curl's --max-time on a live stream
        assert done.returncode in accepted, f"{block.name}: {command}\n{done.stdout}\n{done.stderr}"


# -- cli: command lines checked against the real thing ---------------------------------------


def _settings_fields() -> set[str]:
    from sluiceway.server.settings import Settings

    return set(Settings.model_fields)


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def check_sluiceway(args: list[str]) -> None:
    import click

    from sluiceway.cli.commands import main

    name, rest = args[0], list(args[1:])
    with click.Context(main, info_name="sluiceway") as context:
        command = main.get_command(context, name)
        assert command is not None, f"sluiceway has no command {name}"
        try:
            command.make_context(name, rest, parent=context)
        except click.UsageError as exc:  # pragma: no cover - the failure's message
            raise AssertionError(f"sluiceway {shlex.join(args)}: {exc.format_message()}") from exc


def route_exists(method: str, url: str) -> bool:
    from urllib.parse import urlsplit

    from starlette.routing import Match

    app = _server_app()
    path = urlsplit(url).path
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


_APP: list[object] = []


def _server_app() -> object:
    if not _APP:
        from sluiceway.server.app import create_app
        from sluiceway.server.settings import Settings

        _APP.append(create_app(Settings()))
    return _APP[0]


def check_curl(args: list[str]) -> None:
    method = "GET"
    urls = [a for a in args if a.startswith("http")]
    assert urls, args
    if any(a in ("-d", "--data", "-F") for a in args):
        method = "POST"
    if "-T" in args:
        method = "PUT"
    if "-X" in args:
        method = args[args.index("-X") + 1]
    assert route_exists(method, urls[0]), f"no route for {method} {urls[0]}"


def check_command(words: list[str]) -> None:
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before a command
        words = words[1:]
    if words[:1] == ["sudo"]:
        words = words[1:]
    if words[-1:] == ["&"]:
        words = words[:-1]
    if words[:2] == ["uv", "run"]:
        words = words[2:]
        if words[0] not in ("sluiceway", "python"):
            assert (BIN / words[0]).exists(), f"{words[0]} is not installed"
            return
    program, args = words[0], words[1:]
    if program == "sluiceway":
        check_sluiceway(args)
    elif program == "python":
        script = ROOT / args[0]
        assert script.is_file(), args[0]
        for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
            assert f'"{flag}"' in script.read_text(), f"{args[0]} has no {flag}"
    elif program == "pip":
        assert args[0] == "install"
        found = re.fullmatch(r"sluiceway(?:\[([\w,]+)\])?", args[1])
        assert found, args
        assert set((found[1] or "").split(",")) - {""} <= _extras(), args[1]
    elif program == "export":
        name = args[0].split("=")[0]
        assert name.startswith("SLUICEWAY_"), name
        assert name.removeprefix("SLUICEWAY_").lower() in _settings_fields(), name
    elif program == "curl":
        check_curl(args)
    elif program in ("cp", "ln", "install", "nginx", "systemctl", "npm", "node", "seq", "pip"):
        for arg in args:
            if arg.startswith(("deploy/", "bench/", "tests/")):
                assert (ROOT / arg.split("=")[-1]).exists(), arg
    else:
        raise AssertionError(f"an unchecked command: {shlex.join(words)}")


CLI = by_kind("cli")


@pytest.mark.parametrize("block", CLI, ids=ids(CLI))
def test_cli(block: Block) -> None:
    for command in commands(block.body):
        words: list[str] = []
        for word in [*shlex.split(command, comments=True), "&&"]:
            if word in ("&&", "||", "|", ";"):
                if words:
                    check_command(words)
                words = []
            else:
                words.append(word)


# -- js ---------------------------------------------------------------------------------------

JS = by_kind("js")


@pytest.mark.parametrize("block", JS, ids=ids(JS))
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js(block: Block, tmp_path: Path) -> None:
    module = tmp_path / "block.mjs"
    module.write_text(block.body)
    done = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shipped = (ROOT / "src" / "sluiceway" / "web" / "sluiceway.js").read_text()
    declared = r"^export (?:class|function|const|async function) (\w+)"
    exported = set(re.findall(declared, shipped, re.M))
    for names in re.findall(r'import \{([^}]*)\} from "/static/sluiceway\.js"', block.body):
        for name in (n.strip() for n in names.split(",")):
            assert name in exported, f"sluiceway.js exports no {name}"


# -- output, re-derived -------------------------------------------------------------------------

ID = re.compile(r"\b[0-9a-f]{8}-\d+\b")


def shape(text: str) -> str:
    return ID.sub("EPOCH-N", text).strip()


DERIVE: dict[str, Callable[[], str]] = {}


def derive(function: Callable[[], str]) -> Callable[[], str]:
    DERIVE[function.__name__.removeprefix("derive_")] = function
    return function


OUTPUT = by_kind("output")


@pytest.mark.parametrize("block", OUTPUT, ids=ids(OUTPUT))
def test_output(block: Block) -> None:
    (name,) = block.options
    assert shape(block.body) == shape(DERIVE[name]())


def _frames(produce: Callable[[], Coroutine[None, None, bytes]]) -> str:
    return asyncio.run(produce()).decode()


@derive
def derive_position() -> str:
    """The first event of a stream opened without an id."""

    async def produce() -> bytes:
        hub = Hub()
        for n in range(57):
            await hub.publish("news", str(n))
        sub = await hub.subscribe(["news"])
        opening = sub.opening()
        sub.release()  # the writer contract: a reader that has ended releases
        await hub.aclose()
        return opening

    return _frames(produce)


@derive
def derive_reset() -> str:
    """A resume from a trimmed position: the reset event, then live."""

    async def produce() -> bytes:
        hub = Hub(HubConfig(history_size=18))
        published = [await hub.publish("news", str(n)) for n in range(57)]
        sub = await hub.subscribe(["news"], last_event_id=published[1])
        opening = sub.opening()
        sub.release()  # the writer contract: a reader that has ended releases
        await hub.aclose()
        return opening

    return _frames(produce)


@derive
def derive_delta() -> str:
    """The dashboard's second state, sent as a Fossil delta from the first."""
    first = {"seq": 41, "cpu": 12.5, "mem": 71.0, "disk": 33.1}
    first |= {"net": {"rx": 1200, "tx": 880}, "status": "ok", "host": "web-1"}

    async def produce() -> bytes:
        hub = Hub()
        sub = await hub.subscribe(["dashboard"], delta="fossil")
        await hub.publish("dashboard", first)
        await hub.publish("dashboard", first | {"seq": 42, "cpu": 17.1})
        chunk = sub.next_chunk() or b""
        sub.release()  # the writer contract: a reader that has ended releases
        await hub.aclose()
        return chunk.split(b"\n\n")[1] + b"\n"

    return _frames(produce)
