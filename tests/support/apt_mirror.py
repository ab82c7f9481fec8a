"""The Debian archive mirror this machine's apt uses, read from its sources lists.

    python3 tests/support/apt_mirror.py [ROOT]      (or python3 -m tests.support.apt_mirror)

prints the URI of the first `deb` source (in the order apt reads them) that is the Debian archive
itself: a Debian release as suite (`bookworm`, `sid`, `stable`; not `bookworm-security`,
`-updates`, `-backports`) with component `main`. ROOT (default `/`) is where `etc/apt` is looked
for, so that tests can point it at fixture files. Exits 1, naming the files read, if there is none.

fetch_containerd.sh runs this with the system's python3 before any virtual environment exists, so
it is a plain script: standard library only, importing nothing else of the project.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Debian's code names and suite aliases; the machine's own code name (from os-release) is added,
# so a release newer than this list is still recognised where it is installed.
DEBIAN_RELEASES = frozenset({
    "buzz", "rex", "bo", "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny", "squeeze",
    "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke",
    "sid", "oldoldstable", "oldstable", "stable", "testing", "unstable",
})
# apt reads only files of these names in sources.list.d, and skips others (`x.list.disabled`,
# `x.list.save`, `x.list~`), so the files of a switched-off repository are not read here either.
PARTS_NAME = re.compile(r"[A-Za-z0-9_.-]+\.(list|sources)")
FALSE_WORDS = frozenset({"no", "false", "without", "off", "disable"})  # apt's StringToBool


@dataclass(frozen=True)
class Source:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


class NoMirror(Exception):
    pass


def source_files(root: Path) -> list[Path]:
    """The files apt reads its sources from, in the order it reads them."""
    etc = root / "etc" / "apt"
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(
            p for p in parts.iterdir() if PARTS_NAME.fullmatch(p.name) and p.is_file()
        )
    return files


def split_words(line: str) -> list[str]:
    """Split on blanks outside brackets: `[signed-by=k arch=amd64]` and a `cdrom:[Debian 12 …]/`
    URI stay one word each; a `#` outside brackets starts a comment."""
    words: list[str] = []
    word, depth = "", 0
    for ch in line:
        if ch == "#" and depth == 0:
            break
        if ch.isspace() and depth == 0:
            if word:
                words.append(word)
            word = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        word += ch
    if word:
        words.append(word)
    return words


def parse_one_line(text: str) -> Iterator[Source]:
    """`deb [options] URI suite component…` lines (sources.list, *.list)."""
    for line in text.splitlines():
        words = split_words(line)
        if words[1:2] and words[1].startswith("["):
            del words[1]
        if len(words) < 3:
            continue  # empty, a comment, or nothing apt would accept
        kind, uri, suite, *components = words
        yield Source((kind,), (uri,), (suite,), tuple(components))


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as field name (lower case) -> value, continuation lines joined."""
    fields: dict[str, str] = {}
    name = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue  # a comment does not end the paragraph it sits in
        if not line.strip():
            if fields:
                yield fields
            fields, name = {}, ""
        elif line[0].isspace():
            if name:
                fields[name] += "\n" + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()


def parse_deb822(text: str) -> Iterator[Source]:
    """Stanzas of `Types:`, `URIs:`, `Suites:`, `Components:` (*.sources)."""
    for fields in stanzas(text):
        if fields.get("enabled", "yes").strip().lower() in FALSE_WORDS:
            continue
        types, uris, suites, components = (
            tuple(fields.get(f, "").split()) for f in ("types", "uris", "suites", "components")
        )
        yield Source(types, uris, suites, components)


def read_sources(root: Path) -> tuple[list[Path], list[Source]]:
    files = source_files(root)
    sources: list[Source] = []
    for path in files:
        text = path.read_text(errors="replace")
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        sources += parse(text)
    return files, sources


def os_codename(root: Path) -> str | None:
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "VERSION_CODENAME":
                return value.strip().strip("\"'") or None
        return None
    return None


def is_archive(source: Source, releases: frozenset[str]) -> bool:
    return "deb" in source.types and "main" in source.components and any(
        suite in releases for suite in source.suites
    )


def archive_uri(sources: list[Source], releases: frozenset[str] = DEBIAN_RELEASES) -> str | None:
    """The first URI of the first source that is the Debian archive (a CD-ROM is never one that
    has another suite, so it is passed over)."""
    for source in sources:
        if is_archive(source, releases):
            for uri in source.uris:
                if not uri.startswith("cdrom:"):
                    return uri
    return None


def find_mirror(root: Path = Path("/")) -> str:
    files, sources = read_sources(root)
    codename = os_codename(root)
    releases = DEBIAN_RELEASES | ({codename} if codename else set())
    uri = archive_uri(sources, releases)
    if uri is None:
        etc = root / "etc" / "apt"
        read = ", ".join(map(str, files)) or (
            f"none (no {etc / 'sources.list'}, no *.list or *.sources in {etc / 'sources.list.d'})"
        )
        raise NoMirror(
            "no Debian archive among apt's sources: looked for a `deb` entry with a Debian "
            "release as suite (such as bookworm or sid, not bookworm-security or "
            f"bookworm-updates) and component main; files read: {read}"
        )
    return uri


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {Path(sys.argv[0]).name} [ROOT]", file=sys.stderr)
        return 2
    try:
        print(find_mirror(Path(argv[0]) if argv else Path("/")))
    except NoMirror as e:
        print(f"apt_mirror: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
