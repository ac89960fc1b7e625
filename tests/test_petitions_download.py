import json
import time

import pytest

from bert_lm.corpus.petitions_download import DownloadError, download_petitions


def test_offline_fails_fast_and_names_local_option(tmp_path):
    started = time.monotonic()
    # Port 9 (discard) on loopback: connection refused at once, as offline.
    with pytest.raises(DownloadError, match="data.root=<local dir>"):
        download_petitions(tmp_path, ("2019-04",), base_url="http://127.0.0.1:9", timeout=2)
    assert time.monotonic() - started < 5


def test_resume_and_integrity_with_a_local_server(tmp_path):
    import http.server
    import threading

    body = "".join(json.dumps({"content": f"청원 {i}"}, ensure_ascii=False) + "\n" for i in range(200)).encode()
    ranges = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = 0
            if "Range" in self.headers:
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                ranges.append(start)
            chunk = body[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # An interrupted download left the first 1000 bytes behind.
        (tmp_path / "petitions_2019-04.part").write_bytes(body[:1000])
        url = f"http://127.0.0.1:{server.server_port}"
        download_petitions(tmp_path, ("2019-04",), base_url=url)
        assert ranges == [1000]
        assert (tmp_path / "petitions_2019-04").read_bytes() == body
        # A file changed on disk after download is detected.
        (tmp_path / "petitions_2019-04").write_bytes(body[:-10])
        with pytest.raises(DownloadError, match="does not match"):
            download_petitions(tmp_path, ("2019-04",), base_url=url)
    finally:
        server.shutdown()
