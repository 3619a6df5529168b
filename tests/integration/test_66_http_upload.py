"""XEP-0363 HTTP File Upload, served by httpd itself (issue 17).

A stock client (slixmpp's xep_0363 plugin, which does the PUT with
aiohttp) finds the upload service through the server's disco#items, asks
chatd for a slot and uploads; httpd (mod_bosh's bosh-upload handler)
stores the file and serves it back. Then everything the PUT must refuse,
each with its HTTP status, and what a GET must never do: serve a .php or
.html upload as something a browser renders or a server runs.

Each check looks at what a user sees: iq answers as slixmpp got them,
HTTP status, headers and bytes on the wire, files in BoshUploadDir.
"""

import hashlib
import hmac
import http.client
import os
import secrets
import time
import urllib.parse

import pytest

from native_client import NativeClient
from scenarios import elems, error_cond, iq, text_of

NS_UPLOAD = "urn:xmpp:http:upload:0"
MAX_SIZE = 10485760            # chatd's upload_max_size default
QUOTA = 104857600              # chatd's upload_quota default


class UploadClient(NativeClient):
    """NativeClient with slixmpp's own XEP-0363 plugin.

    Discovery is done here with slixmpp's disco calls, the way the plugin's
    find_upload_service does it (the server's disco#items, then disco#info
    of each item, for identity store/file and the feature): under Python
    3.11 that method itself fails in slixmpp 1.8.3 (it hands coroutines to
    asyncio.wait). The service found is given to the plugin, whose
    upload_file then requests the slot and does the PUT (aiohttp)."""

    def _build(self, jid, password):
        super()._build(jid, password)
        self.x.register_plugin("xep_0363")

    async def _find(self):
        disco = self.x["xep_0030"]
        items = await disco.get_items(jid=self.x.boundjid.domain)
        for item in items["disco_items"]["items"]:
            info = await disco.get_info(jid=item[0])
            d = info["disco_info"]
            if any(i[0] == "store" and i[1] == "file" for i in d["identities"]) and \
                    NS_UPLOAD in d["features"]:
                plugin = self.x["xep_0363"]
                plugin.upload_service = info["from"]
                for form in d.iterables:
                    values = form["values"]
                    if values.get("FORM_TYPE") == [NS_UPLOAD]:
                        plugin.max_file_size = int(values["max-file-size"])
                return info
        return None

    async def _cmd_find_upload(self, kw):
        return await self._iq(kw, self._find())

    async def _cmd_upload_slot(self, kw):
        return await self._iq(kw, self.x["xep_0363"].request_slot(
            kw["service"], kw["filename"], kw["size"], kw.get("ctype")))

    async def _cmd_upload_file(self, kw):
        import io
        try:
            url = await self.x["xep_0363"].upload_file(
                kw["filename"], size=len(kw["data"]), content_type=kw.get("ctype"),
                input_file=io.BytesIO(kw["data"]))
            self._emit({"event": "uploaded", "id": kw.get("id"), "url": url})
        except Exception as e:          # recorded, the test asserts on it
            self._emit({"event": "uploaded", "id": kw.get("id"), "url": None,
                        "error": repr(e)})


@pytest.fixture
def uploader(native_client):
    return lambda: native_client("up", cls=UploadClient)


def slot(c, service, filename, size, ctype="application/octet-stream"):
    """(put_url, get_url) of a granted slot; fails on an error answer."""
    ev = iq(c, "upload_slot", service=service, filename=filename, size=size, ctype=ctype)
    assert ev["type"] == "result", ev["xml"]
    put = elems(ev, "put")[0].get("url")
    get = elems(ev, "get")[0].get("url")
    return put, get


def http_req(method, url, body=None, headers=None):
    """(status, headers dict (lower-case names), body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    path = u.path + ("?" + u.query if u.query else "")
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked="Transfer-Encoding" in (headers or {}))
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def put(url, data, ctype="application/octet-stream", length=None):
    h = {"Content-Type": ctype}
    if length is not None:
        h["Content-Length"] = str(length)
    return http_req("PUT", url, data, h)


def service_of(c):
    ev = iq(c, "find_upload")
    assert ev["type"] == "result" and ev["xml"], f"no upload service found: {ev}"
    return ev


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def with_query(url, **changes):
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    q.update(changes)
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def sign(stack, slot_id, name, size, ctype, expires, user):
    """The slot signature as chatd makes it (common/upload_slot.c), with
    the stack's key: lets a test make a correctly signed slot that chatd
    would never hand out (already expired)."""
    with open(stack.upload_key_file, "rb") as f:
        key = f.read().rstrip()
    msg = b""
    for v in ("xep0363-slot-v1", slot_id, name, str(size), ctype, str(expires), user):
        b = v.encode()
        msg += str(len(b)).encode() + b":" + b + b"\n"
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def assert_protected(headers, name):
    assert headers.get("content-disposition") == f'attachment; filename="{name}"', headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    csp = headers.get("content-security-policy", "")
    assert "sandbox" in csp and "default-src 'none'" in csp, headers


def test_discovery_and_stock_client_roundtrip(uploader, stack):
    c = uploader()
    info = service_of(c)
    assert f"upload.{stack.domain}" in info["xml"]
    ids = [(i.get("category"), i.get("type")) for i in elems(info, "identity")]
    assert ("store", "file") in ids
    assert NS_UPLOAD in [f.get("var") for f in elems(info, "feature")]
    sizes = [f for f in elems(info, "field") if f.get("var") == "max-file-size"]
    assert sizes and sizes[0][0].text == str(MAX_SIZE)

    data = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3000)
    c.send("upload_file", id="u1", filename="holiday photo.png", data=data, ctype="image/png")
    ev = c.wait_event(lambda e: e.get("event") == "uploaded" and e.get("id") == "u1", 30,
                      "upload_file")
    assert ev["url"], ev.get("error")
    assert ev["url"].startswith(stack.upload_url + "/")
    assert ev["url"].endswith("/holiday_photo.png")

    status, h, body = http_req("GET", ev["url"])
    assert status == 200
    assert body == data
    assert h["content-type"] == "image/png"
    assert_protected(h, "holiday_photo.png")

    status, h, body = http_req("HEAD", ev["url"])
    assert status == 200 and body == b"" and h["content-length"] == str(len(data))

    slot_id = ev["url"].rsplit("/", 2)[1]
    on_disk = os.path.join(stack.upload_dir, f"{slot_id}-holiday_photo.png")
    with open(on_disk, "rb") as f:
        assert f.read() == data
    assert not [n for n in os.listdir(stack.upload_dir) if n.startswith(".tmp-")]


def test_put_refusals(uploader, stack):
    alice, bob = uploader(), uploader()
    service = f"upload.{stack.domain}"
    data = secrets.token_bytes(100)
    a_put, a_get = slot(alice, service, "notes.txt", len(data), "text/plain")
    b_put, _ = slot(bob, service, "notes.txt", len(data), "text/plain")

    # Not the announced size: more (413), less (400); chunked as well.
    assert put(a_put, data + b"x", "text/plain")[0] == 413
    assert put(a_put, data[:-1], "text/plain")[0] == 400
    def chunks(b):
        yield b
    assert http_req("PUT", a_put, chunks(data + b"xyz"),
                {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})[0] == 413
    # Another content type than the signed one.
    assert put(a_put, data, "text/html")[0] == 403
    # Forged: a flipped signature digit, an altered size, no slot at all.
    sig = query(a_put)["h"]
    forged = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert put(with_query(a_put, h=forged), data, "text/plain")[0] == 403
    assert put(with_query(a_put, s=str(len(data) + 1)), data + b"x", "text/plain")[0] == 403
    assert put(a_put.split("?", 1)[0], data, "text/plain")[0] == 403
    # Someone else's slot: bob's signature on alice's slot id, or alice's
    # slot claimed for bob.
    b_q = query(b_put)
    a_path = a_put.split("?", 1)[0]
    assert put(a_path + "?" + urllib.parse.urlencode(b_q), data, "text/plain")[0] == 403
    assert put(with_query(a_put, u=b_q["u"]), data, "text/plain")[0] == 403
    # Nothing of that was stored.
    assert http_req("GET", a_get)[0] == 404

    # The real slot works once; a second PUT cannot replace the file.
    assert put(a_put, data, "text/plain")[0] == 201
    assert put(a_put, secrets.token_bytes(100), "text/plain")[0] == 409
    status, h, body = http_req("GET", a_get)
    assert status == 200 and body == data
    assert h["content-type"].startswith("text/plain")

    # Expired: correctly signed, but its time is past.
    slot_id, name, user = secrets.token_hex(16), "late.txt", alice.jid.split("@")[0]
    expires = int(time.time()) - 5
    url = (f"{stack.upload_url}/{slot_id}/{name}?e={expires}&s={len(data)}&u={user}"
           f"&h={sign(stack, slot_id, name, len(data), 'text/plain', expires, user)}")
    status, _, body = put(url, data, "text/plain")
    assert status == 403 and b"expired" in body
    # The same slot, still valid, is accepted: the refusal was the expiry.
    expires = int(time.time()) + 60
    url = (f"{stack.upload_url}/{slot_id}/{name}?e={expires}&s={len(data)}&u={user}"
           f"&h={sign(stack, slot_id, name, len(data), 'text/plain', expires, user)}")
    assert put(url, data, "text/plain")[0] == 201

    # Paths that are not a slot's: unknown id, another name, traversal.
    assert http_req("GET", f"{stack.upload_url}/{secrets.token_hex(16)}/notes.txt")[0] == 404
    assert http_req("GET", a_get.rsplit("/", 1)[0] + "/other.txt")[0] == 404
    assert http_req("GET", f"{stack.upload_url}/..%2f..%2fchatd.conf/x")[0] == 404
    # Other methods: 405, with the protective headers on httpd's own answer.
    status, h, _ = http_req("DELETE", a_get)
    assert status == 405 and "PUT" in h.get("allow", "")
    assert h.get("x-content-type-options") == "nosniff" and "sandbox" in h.get(
        "content-security-policy", "")
    assert http_req("GET", a_get)[0] == 200


def test_client_file_name_is_sanitized(uploader, stack):
    c = uploader()
    data = b"hello"
    p, g = slot(c, f"upload.{stack.domain}", "../../../etc/passwd", len(data))
    assert g.endswith("/passwd") and "/../" not in p
    assert put(p, data)[0] == 201
    slot_id = g.rsplit("/", 2)[1]
    assert os.path.exists(os.path.join(stack.upload_dir, f"{slot_id}-passwd"))


def test_too_large_and_quota(uploader, stack):
    c = uploader()
    service = f"upload.{stack.domain}"
    ev = iq(c, "upload_slot", service=service, filename="big.bin", size=MAX_SIZE + 1)
    assert ev["type"] == "error"
    assert error_cond(ev) == "not-acceptable"
    assert elems(ev, "file-too-large"), ev["xml"]
    assert text_of(ev, "max-file-size") == str(MAX_SIZE)

    # The quota counts granted slots: QUOTA / MAX_SIZE slots fit, one more not.
    for i in range(QUOTA // MAX_SIZE):
        slot(c, service, f"part{i}.bin", MAX_SIZE)
    ev = iq(c, "upload_slot", service=service, filename="one-more.bin", size=1)
    assert ev["type"] == "error"
    assert error_cond(ev) == "resource-constraint", ev["xml"]
    # Another user is not affected.
    other = uploader()
    slot(other, service, "mine.bin", MAX_SIZE)


@pytest.mark.parametrize("name,content", [
    ("shell.php", b"<?php echo 'EXECUTED-' . (6 * 7); ?>\n"),
    ("page.html", b"<!DOCTYPE html><script>document.title='pwned'</script>\n"),
    ("image.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"),
])
def test_script_uploads_are_inert_attachments(uploader, stack, name, content):
    c = uploader()
    p, g = slot(c, f"upload.{stack.domain}", name, len(content), "text/html")
    assert put(p, content, "text/html")[0] == 201
    status, h, body = http_req("GET", g)
    assert status == 200
    assert body == content                       # the bytes, not their output
    assert h["content-type"] == "application/octet-stream"
    assert_protected(h, name)


def test_files_past_retention_are_not_served(uploader, stack):
    c = uploader()
    data = b"old news"
    p, g = slot(c, f"upload.{stack.domain}", "old.txt", len(data), "text/plain")
    assert put(p, data, "text/plain")[0] == 201
    assert http_req("GET", g)[0] == 200
    slot_id = g.rsplit("/", 2)[1]
    path = os.path.join(stack.upload_dir, f"{slot_id}-old.txt")
    old = time.time() - 31 * 86400                 # BoshUploadRetention 30 days
    os.utime(path, (old, old))
    assert http_req("GET", g)[0] == 404


def test_retention_sweep_deletes_old_files():
    """A fresh httpd's children sweep BoshUploadDir at their first
    housekeeping tick: files past BoshUploadRetention and temporary files
    of aborted uploads go; recent files and files that are not uploads
    stay."""
    import shutil
    import tempfile
    import chatstack
    import outage
    root = tempfile.mkdtemp(prefix="chatupload-")
    st = chatstack.Stack(root, mpm=os.environ.get("MPM", "event"), foreground=True)
    ok = False
    try:
        st.write_configs()                         # makes upload_dir
        month = time.time() - 31 * 86400
        files = {
            f"{secrets.token_hex(16)}-expired.png": month,
            f".tmp-{secrets.token_hex(16)}-123-abc": time.time() - 2 * 3600,
            f"{secrets.token_hex(16)}-fresh.png": time.time() - 86400,
            f".tmp-{secrets.token_hex(16)}-456-def": time.time() - 60,
            "not-an-upload.txt": month,
        }
        for name, mtime in files.items():
            path = os.path.join(st.upload_dir, name)
            with open(path, "wb") as f:
                f.write(b"x")
            os.utime(path, (mtime, mtime))
        st.start()
        names = list(files)
        outage.wait_until(lambda: not any(os.path.exists(os.path.join(st.upload_dir, n))
                                          for n in names[:2]), 30, "the sweep")
        for n in names[2:]:
            assert os.path.exists(os.path.join(st.upload_dir, n)), n
        with open(st.httpd_error_log) as f:
            assert "BOSH00817" in f.read()
        ok = True
    finally:
        st.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "browser", "upload.mjs")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_converse_upload_shown_to_the_other_user(stack, users):
    """tests/browser/upload.mjs: alice uploads a picture with Converse's
    upload button, bob's Converse shows it loaded from the GET URL."""
    import json
    import shutil
    import subprocess
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    artifacts = os.path.join(stack.root, "browser-upload")
    r = subprocess.run(
        ["node", BROWSER_SCRIPT, "--base", stack.base_url,
         "--alice-password", users["alice"], "--bob-password", users["bob"],
         "--artifacts", artifacts],
        capture_output=True, text=True, timeout=240,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(BROWSER_SCRIPT))))
    steps = []
    for line in r.stdout.splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            pass
    passed = [s["step"] for s in steps if s.get("ok")]
    assert r.returncode == 0, (
        f"browser run failed (exit {r.returncode}); steps passed: {passed}\n"
        f"{r.stdout[-4000:]}\n{r.stderr[-2000:]}\nscreenshots/logs: {artifacts}")
    assert "bob sees the picture, loaded from the upload URL" in passed
