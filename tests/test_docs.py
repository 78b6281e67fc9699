"""The docs say what the code does: each claim that can be read off the code is checked.

- docs/layout.md names every module under heartbeat/, and only modules that exist;
- docs/configuration.md documents every key of the ``Config`` model (walked recursively)
  and no other, and each default written there in code font is the model's default;
- every log event in the table of docs/operations.md is emitted somewhere in heartbeat/,
  at the level the table gives, and every event heartbeat/ logs is in that table;
- every metric in docs/operations.md is one heartbeat/ defines, and the reverse;
- every command, ``jobs`` action and flag in docs/commands.md is in the parser's
  ``--help``, and every command is documented; every exit code in its table is one the
  code defines;
- every environment variable docs/configuration.md names is read somewhere in
  heartbeat/, and every ``HEARTBEAT_*`` variable the loader accepts is documented;
- README.md keeps `make demo` and `make test` and links every page of docs/;
- every relative link in README.md and docs/ leads to a file that exists, and to a
  heading of it when it names one; every test cited as evidence exists.

Each failure says what to add (or remove) where.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from heartbeat.config import Config
from heartbeat.config.inputs import OTHER_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "heartbeat"
DOCS = ROOT / "docs"
LAYOUT = DOCS / "layout.md"
CONFIGURATION = DOCS / "configuration.md"
OPERATIONS = DOCS / "operations.md"
COMMANDS = DOCS / "commands.md"

LEVELS = ("debug", "info", "warning", "error", "critical")
#: structlog method -> the level it logs at.
LOG_METHODS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error"}
LOG_METHODS |= {"exception": "error", "critical": "critical"}


# -- reading the pages ----------------------------------------------------------------------


def table(page: Path, header: str) -> list[list[str]]:
    """The rows (cells stripped) of every table in ``page`` whose header row starts with
    ``header`` (e.g. ``"| key | default"``), the header and separator rows left out."""
    rows: list[list[str]] = []
    inside = False
    for line in page.read_text().splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and line.startswith("|"):
            if not set(line) <= set("|-: "):
                cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
                rows.append([cell.strip() for cell in cells])
            continue
        inside = False
    assert rows, f"{page.relative_to(ROOT)} has no table starting {header!r}"
    return rows


def spans(text: str) -> list[str]:
    """The code spans of a piece of Markdown."""
    return re.findall(r"`([^`]+)`", text)


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- reading the code -----------------------------------------------------------------------


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path, ast.parse(path.read_text(), filename=str(path))


@cache
def string_calls() -> dict[str, set[str]]:
    """Every string literal passed as the first positional argument of a call in
    heartbeat/ (``log.info("job_added", ...)``, ``StartupWarning("schedule_tight", ...)``)
    or assigned to a name, with the structlog levels it is logged at directly (``{}``
    when that is not a log call)."""
    found: dict[str, set[str]] = {}
    for _, module in _sources():
        for node in ast.walk(module):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
                node.value, ast.Constant
            ):
                # An event name kept in a constant or a typed event's class attribute
                # (``event = "job_dropped"``), logged elsewhere as ``log.info(e.event)``.
                if isinstance(node.value.value, str):
                    found.setdefault(node.value.value, set())
                continue
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                levels = found.setdefault(first.value, set())
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in LOG_METHODS:
                    levels.add(LOG_METHODS[func.attr])
    return found


@cache
def logged_events() -> set[str]:
    """The events heartbeat/ logs with a literal name: ``log.<level>("event", ...)``."""
    return {
        name
        for name, levels in string_calls().items()
        if levels and re.fullmatch(r"[a-z][a-z0-9_]*", name)
    }


# -- the layout page ------------------------------------------------------------------------


def _modules_on_disk() -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path, _ in _sources()}


def _modules_in_layout() -> set[str]:
    return set(re.findall(r"`(heartbeat/[\w/]+\.py)`", LAYOUT.read_text()))


def test_every_module_is_in_the_layout_page() -> None:
    missing = sorted(_modules_on_disk() - _modules_in_layout())
    assert not missing, (
        "docs/layout.md does not name these modules; add a row `| `MODULE` | what it owns |` "
        "to the table of its package: " + ", ".join(missing)
    )


def test_every_module_the_layout_page_names_exists() -> None:
    gone = sorted(_modules_in_layout() - _modules_on_disk())
    assert not gone, (
        "docs/layout.md names modules that do not exist under heartbeat/; remove their rows "
        "(or correct the path): " + ", ".join(gone)
    )


# -- configuration --------------------------------------------------------------------------


def model_keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every leaf key of ``model`` as ``section.key``, with its default."""
    keys: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= model_keys(annotation, f"{prefix}{name}.")
        else:
            keys[f"{prefix}{name}"] = field.get_default(call_default_factory=True)
    return keys


def documented_keys() -> dict[str, str]:
    """``section.key`` -> its default cell, from the key tables of docs/configuration.md."""
    keys = {}
    for row in table(CONFIGURATION, "| key | default"):
        names = [name for name in spans(row[0]) if re.fullmatch(r"[a-z_]+\.[a-z_]+", name)]
        assert len(names) == 1, f"docs/configuration.md: one `section.key` per row: {row[0]}"
        keys[names[0]] = row[1]
    return keys


def test_every_config_key_is_documented() -> None:
    missing = sorted(set(model_keys(Config)) - set(documented_keys()))
    assert not missing, (
        "docs/configuration.md does not document these keys; add a row "
        "`| `section.key` | default | meaning |` to its section's table: " + ", ".join(missing)
    )


def test_every_documented_config_key_exists() -> None:
    unknown = sorted(set(documented_keys()) - set(model_keys(Config)))
    assert not unknown, (
        "docs/configuration.md documents keys the Config model (heartbeat/config/sections.py) "
        "does not have; remove their rows or correct them: " + ", ".join(unknown)
    )


def test_the_documented_defaults_are_the_models() -> None:
    defaults = model_keys(Config)
    wrong = []
    for key, cell in documented_keys().items():
        match = re.fullmatch(r"`([^`]*)`", cell)
        if match is None or key not in defaults:
            continue  # a default in words ("host name", "(off)"): not checked
        try:
            written: object = json.loads(match.group(1))
        except ValueError:
            written = match.group(1)
        if written != defaults[key]:
            wrong.append(f"{key}: the page says {cell}, the model {defaults[key]!r}")
    assert not wrong, "docs/configuration.md: correct these defaults: " + "; ".join(wrong)


# -- log events -----------------------------------------------------------------------------


def documented_events() -> dict[str, set[str]]:
    """event -> the levels docs/operations.md gives it. A row may name two events with two
    levels (``| `a` / `b` | warning / info |``): each gets its own; an event logged at two
    levels has both (``error, warning``)."""
    events: dict[str, set[str]] = {}
    for row in table(OPERATIONS, "| event | level"):
        names = [name for name in spans(row[0]) if re.fullmatch(r"[a-z][a-z0-9_]*", name)]
        levels = [{level.strip() for level in slot.split(",")} for slot in row[1].split("/")]
        assert names and all(slot <= set(LEVELS) for slot in levels), (
            f"docs/operations.md, log events: a row is `| `event` | level | fields |`: {row}"
        )
        if len(levels) == 1:
            levels *= len(names)
        assert len(levels) == len(names), f"docs/operations.md: one level per event: {row}"
        for name, slot in zip(names, levels, strict=True):
            events.setdefault(name, set()).update(slot)
    return events


def test_every_documented_event_is_emitted() -> None:
    calls = string_calls()
    missing = sorted(set(documented_events()) - set(calls))
    assert not missing, (
        "docs/operations.md's log-event table names events nothing in heartbeat/ emits "
        "(no call with that string as its first argument); remove their rows or correct "
        "the name: " + ", ".join(missing)
    )


def test_every_emitted_event_is_documented() -> None:
    missing = sorted(logged_events() - set(documented_events()))
    assert not missing, (
        "heartbeat/ logs these events, which docs/operations.md's log-event table "
        "(under 'Logs') lacks; add a row `| `event` | level | fields | alert on it? |`: "
        + ", ".join(missing)
    )


def test_the_documented_levels_are_the_codes() -> None:
    calls = string_calls()
    wrong = [
        f"{event}: the page says {'/'.join(sorted(levels))}, the code logs it at "
        f"{'/'.join(sorted(calls[event]))}"
        for event, levels in documented_events().items()
        if calls.get(event) and levels != calls[event]
    ]
    assert not wrong, "docs/operations.md, log events: correct these levels: " + "; ".join(wrong)


# -- metrics --------------------------------------------------------------------------------


def documented_metrics() -> set[str]:
    names = set()
    for row in table(OPERATIONS, "| metric | type"):
        for span in spans(row[0]):
            names.add(span.split("{")[0])
    return names


def defined_metrics() -> set[str]:
    """The metric names: string constants ``heartbeat_...`` anywhere in heartbeat/ (today
    all in heartbeat/metrics.py; counters without their ``_total``)."""
    return {
        node.value
        for _, module in _sources()
        for node in ast.walk(module)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"heartbeat_[a-z_]+", node.value)
    }


def test_every_documented_metric_is_defined() -> None:
    defined = defined_metrics()
    missing = sorted(
        name for name in documented_metrics() if name.removesuffix("_total") not in defined
    )
    assert not missing, (
        "docs/operations.md's metric table names metrics heartbeat/ does not "
        "define; remove their rows or correct the name: " + ", ".join(missing)
    )


def test_every_metric_is_documented() -> None:
    documented = {name.removesuffix("_total") for name in documented_metrics()}
    missing = sorted(defined_metrics() - documented)
    assert not missing, (
        "heartbeat/ defines metrics docs/operations.md's metric table lacks; add "
        "a row `| `name{labels}` | type | meaning |` (counters with `_total`): "
        + ", ".join(missing)
    )


# -- commands and exit codes ----------------------------------------------------------------


@cache
def help_text(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "heartbeat", *args, "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def subcommands(*args: str) -> set[str]:
    """The sub-commands ``heartbeat ARGS --help`` lists under its positional arguments."""
    text = help_text(*args)
    listed = text.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^    (\S+)  ", listed, re.MULTILINE))


def documented_commands() -> list[list[str]]:
    """Each ``heartbeat ...`` code span of the first column of the commands table, split."""
    commands = []
    for row in table(COMMANDS, "| command | what it does"):
        for span in spans(row[0]):
            words = span.replace("\\|", "|").split()
            assert words[0] == "heartbeat", f"docs/commands.md: not a heartbeat command: {span}"
            commands.append(words[1:])
    return commands


def test_every_documented_command_and_flag_exists() -> None:
    commands = subcommands()
    problems = []
    for words in documented_commands():
        verb = words[0]
        if verb not in commands:
            problems.append(f"`heartbeat {verb}` is not a command (the parser has {commands})")
            continue
        helps = help_text(verb)
        if verb == "jobs":
            actions = subcommands("jobs")
            named = [a for a in re.split(r"[|\s]", words[1]) if a] if len(words) > 1 else []
            for action in named:
                if action not in actions:
                    problems.append(f"`heartbeat jobs {action}` is not an action ({actions})")
                else:
                    helps += help_text("jobs", action)
        for flag in re.findall(r"--[a-z][a-z-]*", " ".join(words)):
            if flag not in helps:
                problems.append(f"`heartbeat {verb}` has no flag {flag}")
    assert not problems, "docs/commands.md: " + "; ".join(problems)


def test_every_command_is_documented() -> None:
    documented = {words[0] for words in documented_commands()}
    missing = sorted(subcommands() - documented)
    assert not missing, (
        "docs/commands.md's commands table lacks these commands; add a row "
        "`| `heartbeat COMMAND [FLAGS]` | what it does |`: " + ", ".join(missing)
    )
    actions = {
        action
        for words in documented_commands()
        if words[0] == "jobs" and len(words) > 1
        for action in re.split(r"[|\s]", words[1])
        if action
    }
    missing = sorted(subcommands("jobs") - actions)
    assert not missing, "docs/commands.md lacks these `heartbeat jobs` actions: " + ", ".join(
        missing
    )


def defined_exit_codes() -> set[int]:
    """Integer constants named ``EX_*``/``EXIT_*``, and members of a class whose name has
    ``Exit`` in it (an exit-code enum), anywhere in heartbeat/; and argparse's 2."""
    codes = {2}
    for _, module in _sources():
        for node in ast.walk(module):
            if isinstance(node, ast.ClassDef) and "exit" in node.name.lower():
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                        codes.add(item.value.value)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and re.match(r"EX(IT)?_", target.id):
                        codes.add(node.value.value)
    return {code for code in codes if isinstance(code, int)}


def test_every_documented_exit_code_is_defined() -> None:
    documented = {int(row[0]) for row in table(COMMANDS, "| code | meaning")}
    unknown = sorted(documented - defined_exit_codes())
    assert not unknown, (
        f"docs/commands.md's exit-code table gives codes the code does not define: {unknown}; "
        "remove the rows, or define the code (the exit-code constants or enum)"
    )
    undocumented = sorted(defined_exit_codes() - documented)
    assert not undocumented, (
        f"heartbeat/ defines exit codes docs/commands.md's table lacks: {undocumented}; "
        "add a row `| CODE | meaning |`"
    )


# -- links ----------------------------------------------------------------------------------


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def headings(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {
        github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)
    }


def test_every_relative_link_leads_somewhere() -> None:
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in headings(linked):
                broken.append(f"{where}: {linked.relative_to(ROOT)} has no heading #{anchor}")
    assert not broken, "broken links; correct them: " + "; ".join(broken)


def test_the_readme_is_a_front_door_to_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("make demo", "make test"):
        assert command in readme, f"README.md: the newcomer's `{command}` is gone; put it back"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", readme))
    orphans = sorted(page.name for page in DOCS.glob("*.md") if page.name not in linked)
    assert not orphans, (
        "README.md's Documentation table does not link these pages; add a row "
        "`| [Title](docs/PAGE.md) | what it holds |`: " + ", ".join(orphans)
    )


# -- tests the docs cite --------------------------------------------------------------------


def test_every_test_the_docs_cite_exists() -> None:
    tests = ROOT / "tests"
    files = {path.name for path in tests.rglob("test_*.py")}
    functions = set()
    for path in tests.rglob("test_*.py"):
        functions |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    missing = []
    for page in pages():
        for span in spans(page.read_text()):
            name = span.split("[")[0]
            known = files if name.endswith(".py") else functions
            if re.fullmatch(r"test_\w+(\.py)?", name) and name not in known:
                missing.append(f"{page.relative_to(ROOT)}: {span}")
    assert not missing, (
        "these tests, cited as evidence, do not exist under tests/; correct the name or "
        "the claim: " + "; ".join(missing)
    )


# -- environment variables ------------------------------------------------------------------


def test_every_documented_variable_is_read_and_every_read_one_documented() -> None:
    documented = {
        name
        for row in table(CONFIGURATION, "| variable | read by")
        for name in spans(row[0])
        if re.fullmatch(r"[A-Z_]+", name)
    }
    read = set()
    for _, module in _sources():
        for node in ast.walk(module):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                read |= set(re.findall(r"\b(HEARTBEAT_[A-Z_]+|[A-Z]+_DIRECTORY)\b", node.value))
    unread = sorted(documented - read)
    assert not unread, (
        "docs/configuration.md's environment table names variables nothing in heartbeat/ "
        "reads; remove their rows or correct them: " + ", ".join(unread)
    )
    missing = sorted(OTHER_VARIABLES - documented)
    assert not missing, (
        "heartbeat/config/inputs.py accepts these variables, which docs/configuration.md's "
        "environment table lacks; add a row `| `NAME` | read by | meaning |`: " + ", ".join(missing)
    )
