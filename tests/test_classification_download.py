import dataclasses
import hashlib
import io
import time
import urllib.error
import urllib.request

import pytest

from finetune.classification import download as classification_download
from finetune.classification.download import (
    ClassificationDownloadError,
    check_tsv,
    download_korean_hate_speech,
    download_nsmc,
    git_blob_id,
    main,
)
from tests.conftest import shared_data_path

NSMC_BODY = "id\tdocument\tlabel\n9976970\t아 더빙.. 진짜 짜증나네요 목소리\t0\n3819312\t흠...포스터보고 초딩영화줄....\t1\n".encode()
KHS_BODY = "comments\tcontain_gender_bias\tbias\thate\n송중기 시대극은 믿고본다.\tFalse\tnone\tnone\n".encode()
HTML_BODY = b"<!DOCTYPE html>\n<html><head><title>Rate limited</title></head><body>429</body></html>\n"


def _blob_id(body: bytes) -> str:
    return hashlib.sha1(f"blob {len(body)}\0".encode() + body).hexdigest()


class _Server:
    """Stands in for urllib.request.urlopen: serves ``bodies`` by file name and records the URLs asked for."""

    def __init__(self, bodies, on_read=None):
        self.bodies, self.on_read, self.urls = bodies, on_read, []

    def __call__(self, request, timeout=None):
        assert timeout is not None, "every request needs a timeout"
        url = request.full_url
        self.urls.append(url)
        body = self.bodies[url.rsplit("/", 1)[1]]
        server = self

        class Response(io.BytesIO):
            def read(self, size=-1):
                if server.on_read:
                    server.on_read()
                return super().read(size)

        return Response(body)


def test_offline_fails_fast_and_names_the_local_option(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    started = time.monotonic()
    with pytest.raises(ClassificationDownloadError, match=r"task.data_dir=<dir> task.train_file=ratings_train.txt"):
        download_nsmc(tmp_path, ("train", "test"), timeout=1)
    with pytest.raises(ClassificationDownloadError, match=r"task.train_file=train.tsv task.eval_file=dev.tsv"):
        download_korean_hate_speech(tmp_path, ("train",), timeout=1)
    assert time.monotonic() - started < 2
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_refused_connection_fails_within_timeout(tmp_path):
    started = time.monotonic()
    # Port 9 (discard) on loopback: connection refused at once, as offline.
    with pytest.raises(ClassificationDownloadError, match="could not download NSMC train.*task.data_dir=<dir>"):
        download_nsmc(tmp_path, ("train",), base_url="http://127.0.0.1:9/", timeout=2)
    assert time.monotonic() - started < 5


def test_served_file_lands_atomically_and_the_cache_is_reused(tmp_path, monkeypatch):
    target = tmp_path / "ratings_train.txt"

    def during_download():
        # While bytes arrive, only a hidden temporary file exists: never a partial cache file.
        assert not target.exists()
        assert [p.name for p in tmp_path.iterdir()][0].startswith(".ratings_train.txt.")

    server = _Server({"ratings_train.txt": NSMC_BODY}, on_read=during_download)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    blob_ids = {"train": _blob_id(NSMC_BODY)}
    paths = download_nsmc(tmp_path, ("train",), blob_ids=blob_ids)
    assert paths == {"train": target} and target.read_bytes() == NSMC_BODY
    assert server.urls == [classification_download.NSMC.base_url + "ratings_train.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ratings_train.txt"]

    # Second call: the cached file, no request.
    monkeypatch.setattr(urllib.request, "urlopen", _Server({}))
    assert download_nsmc(tmp_path, ("train",), blob_ids=blob_ids) == {"train": target}
    # A cache file changed on disk is caught, not trusted.
    target.write_bytes(NSMC_BODY[:-20])
    with pytest.raises(ClassificationDownloadError, match="changed on disk"):
        download_nsmc(tmp_path, ("train",), blob_ids=blob_ids)


def test_html_error_page_fails_the_parse_check_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _Server({"train.tsv": HTML_BODY}))
    with pytest.raises(ClassificationDownloadError, match=r"not Korean HateSpeech TSV \(header '<!DOCTYPE html>'"):
        download_korean_hate_speech(tmp_path, ("train",), blob_ids={})
    assert list(tmp_path.iterdir()) == []


def test_truncated_or_altered_file_fails_and_leaves_nothing(tmp_path, monkeypatch):
    # Cut in the middle of a row: one field short.
    monkeypatch.setattr(urllib.request, "urlopen", _Server({"ratings_test.txt": NSMC_BODY[:-10]}))
    with pytest.raises(ClassificationDownloadError, match=r"ratings_test.txt.*:3: 2 tab-separated fields, expected 3"):
        download_nsmc(tmp_path, ("test",))
    # Well formed, but not the published file (the pinned blob id).
    monkeypatch.setattr(urllib.request, "urlopen", _Server({"dev.tsv": KHS_BODY}))
    with pytest.raises(ClassificationDownloadError, match="git blob id .* expected a2b083b7"):
        download_korean_hate_speech(tmp_path, ("dev",))
    assert list(tmp_path.iterdir()) == []


def test_header_only_and_unknown_split(tmp_path):
    header_only = tmp_path / "h.tsv"
    header_only.write_text("id\tdocument\tlabel\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no data rows"):
        check_tsv(header_only, ("id", "document", "label"))
    with pytest.raises(ValueError, match="unknown NSMC split 'dev'"):
        download_nsmc(tmp_path, ("dev",))


def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", _Server({"train.tsv": KHS_BODY, "dev.tsv": KHS_BODY}))
    with pytest.raises(SystemExit, match="error: Korean HateSpeech train .* has git blob id"):
        main(["hate_speech", "--cache-dir", str(tmp_path)])
    served = {"train": _blob_id(KHS_BODY), "dev": _blob_id(KHS_BODY)}
    dataset = dataclasses.replace(classification_download.KOREAN_HATE_SPEECH, blob_ids=served)
    monkeypatch.setitem(classification_download.DATASETS, "hate_speech", dataset)
    capsys.readouterr()
    main(["hate_speech", "--cache-dir", str(tmp_path)])
    assert capsys.readouterr().out.splitlines() == [f"train: {tmp_path / 'train.tsv'}", f"dev: {tmp_path / 'dev.tsv'}"]


def test_real_hate_speech_split_passes_the_parse_check():
    path = shared_data_path("korean-hate-speech", "khs-split-dev.tsv")
    assert check_tsv(path, classification_download.KOREAN_HATE_SPEECH.columns) == 802
    assert len(git_blob_id(path)) == 40
