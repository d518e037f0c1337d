"""Real Push clients for the end-to-end tests: a WebSocket and an SSE
subscriber that resume from their last id after any reconnect (as
docs/protocol.md tells a client to), and an HTTP publisher that numbers its
messages, so a test can count accepted, delivered, lost and duplicated."""

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from websockets.sync.client import connect as ws_connect


class Worker:
    """A client loop in a daemon thread, stopped by close()."""

    def __init__(self):
        self.stop = threading.Event()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=15)


class Subscriber(Worker):
    """What every subscriber records: per channel the payloads in order."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.received = {}  # channel -> [data]
        self.ids = {}  # channel -> last id
        self.connects = 0
        self.reconnect_reasons = []
        self.gaps = []  # (channel, why)
        self.errors = []
        self.connected = threading.Event()

    def record(self, channel, msg_id, data):
        with self.lock:
            self.received.setdefault(channel, []).append(data)
            self.ids[channel] = msg_id

    def numbers(self, channel):
        with self.lock:
            return [d["n"] for d in self.received.get(channel, []) if isinstance(d, dict) and "n" in d]

    def loop(self):
        while not self.stop.is_set():
            try:
                self.session()
            except Exception as e:  # noqa: BLE001 - any drop is a reconnect
                self.errors.append(repr(e))
            self.connected.clear()
            self.stop.wait(0.2)


class WsSubscriber(Subscriber):
    def __init__(self, base_url, channels, token=None):
        super().__init__()
        self.base = base_url.replace("http://", "ws://")
        self.channels = channels
        self.token = token

    def session(self):
        url = self.base + "/ws"
        if self.token:
            url += "?" + urllib.parse.urlencode({"token": self.token})
        with ws_connect(url, open_timeout=5, close_timeout=1) as ws:
            welcome = json.loads(ws.recv(timeout=5))
            assert welcome["type"] == "welcome", welcome
            for ch in self.channels:
                frame = {"type": "subscribe", "channel": ch}
                with self.lock:
                    if ch in self.ids:
                        frame["since"] = self.ids[ch]
                ws.send(json.dumps(frame))
            pending = set(self.channels)
            while not self.stop.is_set():
                try:
                    raw = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                f = json.loads(raw)
                t = f.get("type")
                if t == "message":
                    self.record(f["channel"], f["id"], f["data"])
                elif t == "subscribed":
                    if not f.get("recovered", True):
                        self.gaps.append((f["channel"], "recovered:false"))
                    with self.lock:
                        self.ids.setdefault(f["channel"], f.get("position"))
                    pending.discard(f["channel"])
                    if not pending:
                        self.connects += 1
                        self.connected.set()
                elif t == "reconnect":
                    self.reconnect_reasons.append(f.get("reason"))
                    return
                elif t == "error":
                    self.errors.append(f)


class SseSubscriber(Subscriber):
    DEAD_STREAM_SECS = 45  # above the SSE heartbeat (default 15 s): only a dead stream is that quiet

    def __init__(self, base_url, channels, token=None):
        super().__init__()
        self.url = urllib.parse.urlparse(base_url)
        self.channels = channels
        self.token = token
        self.cursor = None
        self.sock = None

    def close(self):
        self.stop.set()
        with self.lock:
            sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the session
        super().close()

    def session(self):
        q = {"channels": ",".join(self.channels)}
        if self.token:
            q["token"] = self.token
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port or 80, timeout=5)
        headers = {"Accept": "text/event-stream"}
        if self.cursor:
            headers["Last-Event-ID"] = self.cursor
        conn.request("GET", "/sse?" + urllib.parse.urlencode(q), headers=headers)
        # Taken before getresponse(): a response without a length makes the
        # connection hand its socket to the response (conn.sock becomes None).
        sock = conn.sock
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"SSE {resp.status}: {resp.read()[:200]!r}")
        # A timed-out read poisons a buffered socket file ("cannot read from
        # timed out object"), so the stream is read blocking, with a timeout
        # well above the heartbeat that only a dead stream reaches; close()
        # wakes the read by shutting the socket down.
        sock.settimeout(self.DEAD_STREAM_SECS)
        with self.lock:
            self.sock = sock
        event = {}
        try:
            while not self.stop.is_set():
                line = resp.fp.readline()
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                if line == "":
                    self.dispatch(event)
                    event = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(":")
                    event[k] = v[1:] if v.startswith(" ") else v
        finally:
            resp.close()
            conn.close()

    def dispatch(self, event):
        if "id" in event:
            self.cursor = event["id"]
            if not self.connected.is_set():
                self.connects += 1
                self.connected.set()
        kind = event.get("event", "message")
        if "data" not in event:
            return
        data = json.loads(event["data"])
        if kind == "message":
            self.record(data["channel"], data["id"], data["data"])
        elif kind == "reset":
            self.gaps.append((data["channel"], "reset"))
        elif kind == "reconnect":
            self.reconnect_reasons.append(data.get("reason"))


class Publisher(Worker):
    """Publishes {"n": i} to one channel over HTTP, at most `rate` a second;
    records which numbers the server accepted (2xx with an id)."""

    def __init__(self, base_url, channel, key=None, rate=50):
        super().__init__()
        self.base = base_url
        self.channel = channel
        self.key = key
        self.rate = rate
        self.accepted = []
        self.refused = []
        self.n = 0

    def publish_one(self, data, timeout=5):
        req = urllib.request.Request(
            f"{self.base}/api/v1/channels/{urllib.parse.quote(self.channel)}/messages",
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def loop(self):
        period = 1.0 / self.rate
        while not self.stop.is_set():
            t0 = time.monotonic()
            n = self.n
            self.n += 1
            try:
                self.publish_one({"n": n})
                self.accepted.append(n)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                self.refused.append((n, repr(e)))
            self.stop.wait(max(0.0, period - (time.monotonic() - t0)))

