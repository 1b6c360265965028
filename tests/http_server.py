"""A scripted HTTP server on 127.0.0.1 for the download tests (no test reaches the
internet)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.mode`` scripts failures (see ``FakeServer``)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests.append((self.path, self.headers.get("Range")))
            n = len(srv.requests)
        mode = srv.mode
        data = srv.files.get(self.path)
        if data is None or mode.get("status") == 404:
            return self._reply(404, b"not found")
        if n <= mode.get("fail_first", 0):
            return self._reply(500, b"try again")
        if n <= mode.get("stall_first", 0):
            time.sleep(mode["stall_seconds"])
        start = self._range_start() if not mode.get("ignore_range") else None
        if start is not None and start >= len(data):
            return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        body = data if start is None else data[start:]
        status, extra = 200, {}
        if start is not None and mode.get("bad_range"):  # claims a range but starts at zero
            body, start = data, 0
        if start is not None:
            status, extra = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        if n == 1 and "drop_after" in mode:
            return self._reply(status, body, extra, send=mode["drop_after"])
        self._reply(status, body, extra)

    def _range_start(self):
        header = self.headers.get("Range")
        if not header:
            return None
        return int(header.removeprefix("bytes=").split("-")[0])

    def _reply(self, status, body, extra=None, send=None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))  # the full length, even when dropping
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body if send is None else body[:send])
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading early
            pass
        self.close_connection = True


class FakeServer:
    """A scripted HTTP server. ``mode`` keys: ``ignore_range``, ``bad_range`` (206 from
    byte 0 whatever was asked), ``drop_after`` (bytes sent on the first request before the
    connection closes), ``fail_first`` (requests answered 500), ``stall_first`` and
    ``stall_seconds``, ``status`` (404 for everything)."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.mode, self.httpd.requests = {}, {}, []
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,),
                                       daemon=True)
        self.thread.start()

    def add(self, path, data, **mode):
        self.httpd.files[path] = data
        self.httpd.mode.update(mode)
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    @property
    def requests(self):
        return list(self.httpd.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
