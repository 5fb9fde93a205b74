"""Reading the Docker files as the engine would: docker-compose.yml (Compose's
interpolation, ports, commands, healthchecks), the Dockerfile (instructions, stages,
COPY lines) and .dockerignore (moby/patternmatcher's rules). Plain functions, shared by
test_static.py and test_runtime.py; the `compose` and `services` fixtures are in
conftest.py.
"""

import json
import posixpath
import re
import shlex
import subprocess
import sys
from pathlib import Path

from src.config import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent  # the container has /app/.venv/bin first on PATH
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
IMAGE_ROOT = "/app"  # the runtime stage's WORKDIR: PROJECT_ROOT inside the image


# --- docker-compose.yml ---------------------------------------------------------------


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str) -> str:
    """Compose's interpolation, with every variable at its default: `$$` is a literal `$`;
    `${VAR:-default}` gives the default; a variable without a default is an error (the
    file must not depend on what a given .env happens to define)."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group("braced") or match.group("bare")
        default = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*:?-(?P<default>.*)", expression)
        assert default, f"{match.group(0)!r} has no default (write $$ for a literal $)"
        return default.group("default")

    return _VARIABLE.sub(substitute, text)


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, host_port or range, container_port) for each `ports` entry."""
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host_ip, published = entry.get("host_ip", ""), str(entry.get("published", ""))
            result.append((host_ip, published, str(entry["target"])))
            continue
        parts = interpolate(str(entry)).split("/")[0].split(":")
        parts = ["", "", *parts][-3:]
        result.append((parts[0], parts[1], parts[2]))
    return result


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """A compose/Dockerfile healthcheck `test` as the argv the engine runs."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), test
    return rest if kind == "CMD" else ["/bin/sh", "-c", *rest]


def command_argv(command: list[str] | str) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def with_option(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(name) + 1] = value
    return argv


# --- the Dockerfile -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image is."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list), arguments
    return argv


def dockerfile_copies(
    instructions: list[tuple[str, str]] | None = None,
) -> list[tuple[dict[str, str], list[str], str]]:
    """(flags, sources, destination) for each COPY/ADD (of every stage by default)."""
    copies = []
    for keyword, arguments in instructions or dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        flag_words, rest = re.fullmatch(r"((?:--\S+\s+)*)(.*)", arguments).groups()
        flags = dict(word[2:].partition("=")[::2] for word in flag_words.split())
        words = exec_form(rest) if rest.startswith("[") else shlex.split(rest)
        copies.append((flags, words[:-1], words[-1]))
    return copies


def context_sources(instructions: list[tuple[str, str]] | None = None) -> set[str]:
    """What the COPY/ADD lines take from the build context (not from another stage)."""
    copies = dockerfile_copies(instructions)
    return {source for flags, sources, _ in copies if "from" not in flags for source in sources}


def dockerfile_cmd() -> list[str]:
    (arguments,) = [a for keyword, a in runtime_stage() if keyword == "CMD"]
    return exec_form(arguments)


def dockerfile_healthcheck() -> list[str]:
    (arguments,) = [a for keyword, a in runtime_stage() if keyword == "HEALTHCHECK"]
    return exec_form(arguments[arguments.index("CMD ") + 4 :])


# --- .dockerignore, with the semantics of moby/patternmatcher -------------------------


def pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore (or COPY source) glob: `*` and `?` stay within one path segment,
    `**` crosses them."""
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end
        elif char == "\\":
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(char)
        i += 1
    return re.compile(regex)


def path_and_parents(path: str) -> list[str]:
    """`a/b/c` → [`a/b/c`, `a`, `a/b`]: what a pattern may match to take in `path`."""
    parts = path.split("/")
    return [path, *("/".join(parts[: i + 1]) for i in range(len(parts) - 1))]


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception `!`, pattern), in file order."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves `path` (relative, posix) out of the build context: the last
    rule matching it or one of its parent folders wins."""
    candidates = path_and_parents(path)
    excluded = False
    for exception, regex in rules:
        if exception != excluded:
            continue  # only an exception can re-include, only a pattern can exclude
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


def repository_files() -> list[str]:
    """Tracked files, and new ones git does not ignore: what a build context may see."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({name for name in out.decode().split("\0") if name})
