"""tests/support/apt_mirror.py: the Debian archive's URI, found in apt's sources lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.apt_mirror import NoMirror, find_mirror, split_words

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "apt_mirror.py"
MIRROR = "http://mirror.example/debian"
SECURITY = "http://security.example/debian-security"


def write(root: Path, name: str, text: str) -> None:
    path = root / "etc" / "apt" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_one_line_form_with_options(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", (
        "# the archive, from the installer\n"
        f"deb-src {MIRROR}/src bookworm main\n"
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg arch=amd64] {MIRROR} "
        "bookworm main contrib  # comment\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_options_with_blanks_inside_the_brackets(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/m.list", f"deb [ arch=amd64 trusted=yes ] {MIRROR} sid main")
    assert find_mirror(tmp_path) == MIRROR


def test_a_commented_out_line_is_not_a_source(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", (
        "#deb http://old.example/debian bookworm main\n"
        f"deb {MIRROR} bookworm main\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_deb822_form(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", (
        "Types: deb deb-src\n"
        "# http://snapshot.example/archive/debian/20250520T000000Z\n"
        f"URIs: {MIRROR} http://second.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        f"URIs: {SECURITY}\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_deb822_field_names_any_case_and_an_inline_key(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", (
        "types: deb\n"
        "signed-by:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        " .\n"
        " mQINBGPL...\n"
        "URIS: " + MIRROR + "\n"
        "SUITES: trixie\n"
        "components: contrib main\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_deb822_stanza_that_is_not_enabled_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", (
        "Types: deb\n"
        "URIs: http://off.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Enabled: no\n"
        "\n"
        "Types: deb\n"
        f"URIs: {MIRROR}\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Enabled: yes\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_security_updates_backports_and_others_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", (
        f"deb {SECURITY} bookworm-security main\n"
        "deb http://updates.example/debian bookworm-updates main\n"
        "deb http://backports.example/debian bookworm-backports main\n"
        "deb http://old-security.example/debian-security bookworm/updates main\n"
        "deb http://docker.example/linux/debian bookworm stable\n"  # not component main
        "deb http://src.example/debian bookworm\n"  # no component at all
        "deb cdrom:[Debian GNU/Linux 12.0.0 _Bookworm_ - Official amd64 DVD]/ bookworm main\n"
        f"deb {MIRROR} bookworm main\n"
    ))
    write(tmp_path, "sources.list.d/nodesource.sources", (
        "Types: deb\nURIs: http://node.example/node_20.x\nSuites: nodistro\nComponents: main\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_third_party_repository_first_in_order_is_not_the_archive(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/a-nodesource.sources", (
        "Types: deb\nURIs: http://node.example/node_20.x\nSuites: nodistro\nComponents: main\n"
    ))
    write(tmp_path, "sources.list.d/b-debian.sources", (
        f"Types: deb\nURIs: {MIRROR}\nSuites: sid\nComponents: main\n"
    ))
    assert find_mirror(tmp_path) == MIRROR


def test_the_first_archive_in_apts_order_wins(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", f"deb {MIRROR} bookworm main\n")
    write(tmp_path, "sources.list.d/0-other.list", "deb http://other.example/debian sid main\n")
    assert find_mirror(tmp_path) == MIRROR
    (tmp_path / "etc" / "apt" / "sources.list").unlink()
    assert find_mirror(tmp_path) == "http://other.example/debian"


def test_disabled_and_other_files_are_not_read(tmp_path: Path) -> None:
    for name in ("0.list.disabled-by-farm", "1.sources.disabled", "2.list.save", "3.list~",
                 "4 space.list", "5.conf"):
        write(tmp_path, f"sources.list.d/{name}", "deb http://off.example/debian bookworm main\n")
    write(tmp_path, "sources.list.d/9-debian.list", f"deb {MIRROR} bookworm main\n")
    assert find_mirror(tmp_path) == MIRROR


def test_the_machines_own_release_counts_even_if_newer_than_the_list(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", "deb http://future.example/debian zorg main\n")
    with pytest.raises(NoMirror):
        find_mirror(tmp_path)
    (tmp_path / "etc" / "os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=zorg\n')
    assert find_mirror(tmp_path) == "http://future.example/debian"


def test_no_mirror_names_the_files_read(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", f"deb {SECURITY} bookworm-security main\n")
    write(tmp_path, "sources.list.d/x.list.disabled", f"deb {MIRROR} bookworm main\n")
    with pytest.raises(NoMirror) as e:
        find_mirror(tmp_path)
    message = str(e.value)
    assert str(tmp_path / "etc" / "apt" / "sources.list") in message
    assert "x.list.disabled" not in message
    assert "component main" in message


def test_no_sources_at_all(tmp_path: Path) -> None:
    with pytest.raises(NoMirror, match="files read: none"):
        find_mirror(tmp_path)


def test_as_a_script(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", f"deb {MIRROR} bookworm main\n")
    argv = [sys.executable, str(SCRIPT), str(tmp_path)]
    ok = subprocess.run(argv, capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (0, MIRROR + "\n")
    write(tmp_path, "sources.list", f"deb {SECURITY} bookworm-security main\n")
    failed = subprocess.run(argv, capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "no Debian archive" in failed.stderr


def test_split_words_keeps_brackets_together() -> None:
    assert split_words("deb [a=1 b=2] cdrom:[Debian 12 DVD]/ bookworm main # x") == [
        "deb", "[a=1 b=2]", "cdrom:[Debian 12 DVD]/", "bookworm", "main"]
