"""Downloads and extraction of the real datasets, against an HTTP server on 127.0.0.1.

Unit tests of comma.data.download.download/extract, then the real rules of rules/download.smk
end to end through Snakemake (data.source: download, URLs pointing at the local server).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import yaml
from conftest import snakemake

from comma.data.download import DownloadError, download, extract, read_lock
from comma.data.manifest import check_manifest
from comma.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LJSPEECH_SAMPLE = SHARED_DATA / "ljspeech-sample"
LIBRITTS_SUBSET = "dev-clean"


class ArchiveHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder; under /lying/ announces twice the real Content-Length and
    then closes the connection, as a dropped transfer does."""

    def do_GET(self):
        if not self.path.startswith("/lying/"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.removeprefix("/lying/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(2 * len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format, *args):  # keep pytest output free of access logs
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(root folder, base URL) of an HTTP server on 127.0.0.1 serving that folder."""
    root = tmp_path_factory.mktemp("served")

    def handler(*args, **kwargs):
        return ArchiveHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flipped(data: bytes) -> bytes:
    """`data` with one byte in the middle inverted."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (atomic writes) left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            add_bytes(tar, name, data)
    return path


IWSLT_FILES = {
    "de-en/train.tags.de-en.de": "<url>http://www.ted.com/talks/a</url>\nDanke schön .\n".encode(),
    "de-en/train.tags.de-en.en": b"<url>http://www.ted.com/talks/a</url>\nThank you .\n",
    "de-en/IWSLT14.TED.dev2010.de-en.de.xml": (
        b'<refset><doc docid="1"><seg id="1"> Hallo Welt . </seg></doc></refset>\n'
    ),
    "de-en/IWSLT14.TED.dev2010.de-en.en.xml": (
        b'<refset><doc docid="1"><seg id="1"> Hello world . </seg></doc></refset>\n'
    ),
}


def libritts_files(subset: str) -> dict[str, bytes]:
    utterance = f"LibriTTS/{subset}/84/121123/84_121123_000007_000000"
    return {
        # Files beside the subset folder, as in the real archives: not part of the subset.
        "LibriTTS/SPEAKERS.txt": b";ID |SEX| SUBSET |MINUTES| NAME\n84 | F | dev-clean | 8 | C\n",
        f"{utterance}.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
        f"{utterance}.normalized.txt": b"Go, do you hear?\n",
        f"{utterance}.original.txt": b"Go, do you hear?\n",
    }


@pytest.fixture(scope="module")
def ljspeech_archive(tmp_path_factory) -> Path:
    """LJSpeech-1.1.tar.bz2 of the 32-clip real sample (the shared tarball, or built from it)."""
    shared = LJSPEECH_SAMPLE / "LJSpeech-1.1.tar.bz2"
    if shared.is_file():
        return shared
    folder = LJSPEECH_SAMPLE / "LJSpeech-1.1"
    if not (folder / "metadata.csv").is_file():
        pytest.skip(f"real LJSpeech sample not found at {folder} (only in the project's CI)")
    archive = tmp_path_factory.mktemp("ljspeech") / "LJSpeech-1.1.tar.bz2"
    with tarfile.open(archive, "w:bz2", compresslevel=1) as tar:
        tar.add(folder, arcname="LJSpeech-1.1")
    return archive


# --------------------------------------------------------------------------- download()


def test_download_good_file_passes_its_checksum(server, tmp_path):
    root, base = server
    payload = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    (root / "good.bin").write_bytes(payload)
    dest = tmp_path / "sub" / "good.bin"
    digest = download(f"{base}/good.bin", dest, sha256=hashlib.sha256(payload).hexdigest().upper())
    assert dest.read_bytes() == payload
    assert digest == hashlib.sha256(payload).hexdigest()
    assert dest.stat().st_mode & 0o777 == 0o644  # not the temp file's private mode
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_download_damaged_file_fails_checksum_and_leaves_nothing(server, tmp_path, damage):
    root, base = server
    payload = b"the real archive " * 4096
    expected = hashlib.sha256(payload).hexdigest()
    served = flipped(payload) if damage == "flipped" else payload[: len(payload) // 3]
    (root / f"{damage}.bin").write_bytes(served)
    dest = tmp_path / f"{damage}.bin"
    with pytest.raises(DownloadError) as error:
        download(f"{base}/{damage}.bin", dest, sha256=expected)
    message = str(error.value)
    assert f"{base}/{damage}.bin" in message
    assert "checksum mismatch" in message
    assert f"expected sha256 {expected}" in message
    assert f"got {hashlib.sha256(served).hexdigest()}" in message
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_download_body_shorter_than_content_length_fails(server, tmp_path):
    root, base = server
    (root / "dropped.bin").write_bytes(b"x" * 10_000)
    dest = tmp_path / "dropped.bin"
    with pytest.raises(DownloadError, match="truncated download: received 10000 bytes") as error:
        download(f"{base}/lying/dropped.bin", dest)
    assert "Content-Length announced 20000" in str(error.value)
    assert f"{base}/lying/dropped.bin" in str(error.value)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_download_http_error_names_url_and_status(server, tmp_path):
    _, base = server
    dest = tmp_path / "missing.tgz"
    with pytest.raises(DownloadError, match=r"/absent\.tgz: HTTP error 404"):
        download(f"{base}/absent.tgz", dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_download_connection_refused_names_url(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/de-en.tgz"
    with pytest.raises(DownloadError, match="cannot connect") as error:
        download(url, tmp_path / "de-en.tgz", timeout=10)
    assert url in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_lock_file_recorded_on_first_download_and_enforced_after(server, tmp_path):
    root, base = server
    first = b"IWSLT14 version 1 " * 1000
    (root / "locked-v1.tgz").write_bytes(first)
    (root / "locked-v2.tgz").write_bytes(flipped(first))
    lock = tmp_path / "config" / "checksums" / "iwslt14-de-en.sha256"

    digest = download(f"{base}/locked-v1.tgz", tmp_path / "a" / "de-en.tgz", lock_path=lock)
    assert digest == hashlib.sha256(first).hexdigest()
    assert read_lock(lock) == digest
    assert lock.read_text().splitlines()[-1] == f"{digest}  de-en.tgz"  # sha256sum's format

    # The same bytes again: accepted, lock unchanged.
    download(f"{base}/locked-v1.tgz", tmp_path / "b" / "de-en.tgz", lock_path=lock)
    assert read_lock(lock) == digest

    # Different bytes: refused, naming the lock file; nothing written, lock unchanged.
    dest = tmp_path / "c" / "de-en.tgz"
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        download(f"{base}/locked-v2.tgz", dest, lock_path=lock)
    assert str(lock) in str(error.value)
    assert f"expected sha256 {digest}" in str(error.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []
    assert read_lock(lock) == digest


def test_malformed_lock_file_fails_before_downloading(server, tmp_path):
    _, base = server
    lock = tmp_path / "bad.sha256"
    lock.write_text("not-a-checksum  de-en.tgz\n")
    with pytest.raises(InputError, match="expected a sha256") as error:
        download(f"{base}/absent.tgz", tmp_path / "de-en.tgz", lock_path=lock)
    assert error.value.path == lock and error.value.line == 1


# --------------------------------------------------------------------------- extract()


def test_extract_keeps_only_the_top_level_folder(tmp_path):
    archive = build_tar(tmp_path / f"{LIBRITTS_SUBSET}.tar.gz", libritts_files(LIBRITTS_SUBSET))
    dest = tmp_path / "resources" / "LibriTTS" / LIBRITTS_SUBSET
    assert extract(archive, dest, f"LibriTTS/{LIBRITTS_SUBSET}") == dest
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        "84/121123/84_121123_000007_000000.normalized.txt",
        "84/121123/84_121123_000007_000000.original.txt",
        "84/121123/84_121123_000007_000000.wav",
    ]
    assert not (dest.parent / "SPEAKERS.txt").exists()
    assert dest.stat().st_mode & 0o777 == 0o755  # not the temp folder's private mode
    assert leftovers(dest.parent) == []


def test_extract_accepts_dot_slash_member_names(tmp_path):
    files = {f"./{name}": data for name, data in IWSLT_FILES.items()}
    archive = build_tar(tmp_path / "de-en.tgz", files)
    dest = tmp_path / "iwslt14" / "de-en"
    extract(archive, dest, "de-en")
    assert (dest / "train.tags.de-en.en").read_bytes() == IWSLT_FILES["de-en/train.tags.de-en.en"]


def test_extract_without_the_top_level_folder_names_the_archive(tmp_path):
    archive = build_tar(tmp_path / "de-en.tgz", {"fr-en/train.tags.fr-en.fr": b"Bonjour .\n"})
    dest = tmp_path / "out" / "de-en"
    with pytest.raises(InputError, match="expected top-level folder de-en/ not found") as error:
        extract(archive, dest, "de-en")
    assert error.value.path == archive
    assert "fr-en/" in str(error.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_extract_refuses_parent_directory_members(tmp_path):
    archive = build_tar(
        tmp_path / "evil.tgz", {"de-en/ok.txt": b"ok\n", "de-en/../../escaped.txt": b"pwned\n"}
    )
    dest = tmp_path / "deep" / "out" / "de-en"
    with pytest.raises(InputError, match="unsafe member path") as error:
        extract(archive, dest, "de-en")
    assert error.value.path == archive
    assert not dest.exists()
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert leftovers(dest.parent) == []


def test_extract_refuses_symlink_leaving_the_destination(tmp_path):
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "de-en/ok.txt", b"ok\n")
        link = tarfile.TarInfo("de-en/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "out" / "de-en"
    with pytest.raises(InputError, match="cannot extract") as error:
        extract(archive, dest, "de-en")
    assert error.value.path == archive
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_extract_corrupt_archive_leaves_nothing(tmp_path):
    good = build_tar(tmp_path / "good.tgz", {"de-en/big.bin": bytes(range(256)) * 4000})
    archive = tmp_path / "cut.tgz"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dest = tmp_path / "out" / "de-en"
    with pytest.raises(InputError, match="cannot extract") as error:
        extract(archive, dest, "de-en")
    assert error.value.path == archive
    assert not dest.exists()
    assert leftovers(dest.parent) == []


# --------------------------------------------------------------------------- the rules


def write_config(workdir: Path, base: str, *, ljspeech: str, ljspeech_sha256: str, **data):
    """A --configfile switching the workflow to data.source: download on the local server."""
    config = {
        "data": {
            "source": "download",
            "iwslt14": {
                "url": f"{base}/{data.get('iwslt', 'de-en.tgz')}",
                "lock": "config/checksums/iwslt14-de-en.sha256",
            },
            "ljspeech": {"url": f"{base}/{ljspeech}", "sha256": ljspeech_sha256},
            "libritts": {
                "url": f"{base}/LibriTTS/{{subset}}.tar.gz",
                "sha256": {LIBRITTS_SUBSET: data.get("libritts_sha256", "0" * 64)},
            },
        }
    }
    path = workdir / "download.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def served_archives(server, ljspeech_archive):
    """The good, corrupted and truncated archives on the server; returns their checksums."""
    root, _ = server
    good = ljspeech_archive.read_bytes()
    (root / "LJSpeech-1.1.tar.bz2").write_bytes(good)
    (root / "corrupted").mkdir()
    (root / "corrupted" / "LJSpeech-1.1.tar.bz2").write_bytes(flipped(good))
    (root / "truncated").mkdir()
    (root / "truncated" / "LJSpeech-1.1.tar.bz2").write_bytes(good[: len(good) // 2])
    build_tar(root / "de-en.tgz", IWSLT_FILES)
    changed = {**IWSLT_FILES, "de-en/train.tags.de-en.en": b"Thanks a lot .\n"}
    build_tar(root / "de-en-changed.tgz", changed)
    (root / "LibriTTS").mkdir()
    libritts = build_tar(
        root / "LibriTTS" / f"{LIBRITTS_SUBSET}.tar.gz", libritts_files(LIBRITTS_SUBSET)
    )
    return {"ljspeech": hashlib.sha256(good).hexdigest(), "libritts": sha256_of(libritts)}


CORPORA = [
    "resources/LJSpeech-1.1",
    "resources/iwslt14/de-en",
    f"resources/LibriTTS/{LIBRITTS_SUBSET}",
]
# Each extracted folder and its manifest (rule corpus_manifest), which the readers take.
TARGETS = [*CORPORA, *(f"{folder}.manifest.json" for folder in CORPORA)]


@pytest.mark.slow
def test_rules_download_check_and_extract(server, served_archives, tmp_path):
    root, base = server
    config = write_config(
        tmp_path,
        base,
        ljspeech="LJSpeech-1.1.tar.bz2",
        ljspeech_sha256=served_archives["ljspeech"],
        libritts_sha256=served_archives["libritts"],
    )
    snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--", *TARGETS, timeout=600)

    metadata = (tmp_path / "resources" / "LJSpeech-1.1" / "metadata.csv").read_text()
    rows = [line.split("|") for line in metadata.splitlines()]
    assert len(rows) == 32 and all(len(row) == 3 for row in rows)
    assert rows[0][0] == "LJ001-0001"
    wavs = sorted((tmp_path / "resources" / "LJSpeech-1.1" / "wavs").glob("*.wav"))
    assert len(wavs) == 32
    sample_wav = LJSPEECH_SAMPLE / "LJSpeech-1.1" / "wavs" / "LJ001-0001.wav"
    if sample_wav.is_file():
        assert wavs[0].read_bytes() == sample_wav.read_bytes()

    for folder in CORPORA:
        assert (
            check_manifest(tmp_path / f"{folder}.manifest.json")
            == len([f for f in (tmp_path / folder).rglob("*") if f.is_file()]) - 1
        )  # Snakemake's .snakemake_timestamp is not listed

    de_en = tmp_path / "resources" / "iwslt14" / "de-en"
    assert (de_en / "train.tags.de-en.de").read_bytes() == IWSLT_FILES["de-en/train.tags.de-en.de"]
    lock = tmp_path / "config" / "checksums" / "iwslt14-de-en.sha256"
    assert read_lock(lock) == sha256_of(root / "de-en.tgz")

    subset = tmp_path / "resources" / "LibriTTS" / LIBRITTS_SUBSET
    assert (subset / "84" / "121123" / "84_121123_000007_000000.normalized.txt").is_file()
    assert (
        sha256_of(tmp_path / "resources" / "archives" / "LibriTTS" / f"{LIBRITTS_SUBSET}.tar.gz")
        == (served_archives["libritts"])
    )

    for rule in ("download_iwslt14", "download_ljspeech", "extract_iwslt14", "extract_ljspeech"):
        assert (tmp_path / "logs" / "download" / f"{rule}.log").is_file()
        assert (tmp_path / "logs" / "benchmarks" / f"{rule}.tsv").is_file()
    for rule in ("download_libritts", "extract_libritts"):
        assert (tmp_path / "logs" / "download" / f"{rule}_{LIBRITTS_SUBSET}.log").is_file()
        assert (tmp_path / "logs" / "benchmarks" / rule / f"{LIBRITTS_SUBSET}.tsv").is_file()

    nothing = snakemake(
        tmp_path, "-n", "--cores", "1", "--configfile", str(config), "--", *TARGETS, timeout=300
    )
    assert "Nothing to be done" in nothing.stdout + nothing.stderr

    # Upstream changes the IWSLT archive: the lock file refuses it, the job fails.
    changed = write_config(
        tmp_path,
        base,
        iwslt="de-en-changed.tgz",
        ljspeech="LJSpeech-1.1.tar.bz2",
        ljspeech_sha256=served_archives["ljspeech"],
        libritts_sha256=served_archives["libritts"],
    )
    result = snakemake(
        tmp_path,
        "--cores",
        "1",
        "--configfile",
        str(changed),
        "--",
        "resources/iwslt14/de-en",
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "checksum mismatch" in output and "iwslt14-de-en.sha256" in output
    assert not (tmp_path / "resources" / "archives" / "de-en.tgz").exists()
    assert read_lock(lock) == sha256_of(root / "de-en.tgz")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_rules_damaged_ljspeech_fails_and_leaves_nothing(server, served_archives, tmp_path, damage):
    _, base = server
    config = write_config(
        tmp_path,
        base,
        ljspeech=f"{damage}/LJSpeech-1.1.tar.bz2",
        ljspeech_sha256=served_archives["ljspeech"],
    )
    result = snakemake(
        tmp_path,
        "--cores",
        "1",
        "--configfile",
        str(config),
        "--",
        "resources/LJSpeech-1.1",
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "checksum mismatch" in output
    assert f"expected sha256 {served_archives['ljspeech']}" in output
    archives = tmp_path / "resources" / "archives"
    assert not (archives / "LJSpeech-1.1.tar.bz2").exists()
    assert not archives.exists() or leftovers(archives) == []
    assert not (tmp_path / "resources" / "LJSpeech-1.1").exists()


def test_a_page_that_is_no_archive_is_never_pinned(server, tmp_path):
    import io
    import tarfile

    root, base = server
    (root / "error-page.tgz").write_bytes(b"<!DOCTYPE html><html>503 Service Unavailable</html>")
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        data = b"Hallo Welt\n"
        info = tarfile.TarInfo("de-en/train.tags.de-en.de")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (root / "good-de-en.tgz").write_bytes(good.getvalue())
    (root / "cut-de-en.tgz").write_bytes(good.getvalue()[:-30])
    lock = tmp_path / "iwslt14.sha256"
    members = ["de-en/train.tags.de-en.de"]
    for bad, message in (("error-page.tgz", "not a readable tar"), ("cut-de-en.tgz", None)):
        dest = tmp_path / bad
        with pytest.raises(DownloadError, match=message):
            download(f"{base}/{bad}", dest, lock_path=lock, members=members)
        assert not dest.exists() and not lock.exists()  # nothing pinned
    digest = download(
        f"{base}/good-de-en.tgz", tmp_path / "de-en.tgz", lock_path=lock, members=members
    )
    assert read_lock(lock) == digest
    with pytest.raises(DownloadError, match="holds no de-en/other"):
        download(f"{base}/good-de-en.tgz", tmp_path / "x.tgz", members=["de-en/other"])


def test_an_archive_without_every_member_is_never_pinned(server, tmp_path):
    """An IWSLT14 archive with train.tags.de-en.de but no .en: the download fails naming the
    URL, the archive, the missing member and the lock file, and pins nothing; the complete
    archive then downloads and is pinned without touching the lock by hand. A lock pinned
    by an earlier version (which checked only the .de member) is named for deletion."""
    root, base = server
    members = ["de-en/train.tags.de-en.de", "de-en/train.tags.de-en.en"]
    for name, names in (("half-de-en.tgz", members[:1]), ("full-de-en.tgz", members)):
        with tarfile.open(root / name, mode="w:gz") as tar:
            for member in names:
                add_bytes(tar, member, b"Hallo Welt\n")
    lock, dest = tmp_path / "iwslt14.sha256", tmp_path / "archives" / "de-en.tgz"
    with pytest.raises(DownloadError) as error:
        download(f"{base}/half-de-en.tgz", dest, lock_path=lock, members=members)
    assert str(error.value) == (
        f"{base}/half-de-en.tgz: the archive for {dest} holds no de-en/train.tags.de-en.en (it "
        f"must hold {', '.join(members)}): not the dataset's complete archive; {dest} was not "
        f"written and nothing was recorded in the lock file {lock}"
    )
    assert not lock.exists() and not dest.exists() and leftovers(dest.parent) == []
    digest = download(f"{base}/full-de-en.tgz", dest, lock_path=lock, members=members)
    assert read_lock(lock) == digest == sha256_of(root / "full-de-en.tgz")

    lock.write_text(f"{sha256_of(root / 'half-de-en.tgz')}  de-en.tgz\n")  # an old pin
    with pytest.raises(DownloadError, match="pins this incomplete archive's sha256: delete"):
        download(f"{base}/half-de-en.tgz", tmp_path / "again.tgz", lock_path=lock, members=members)
