"""engine.sinks.visdom.server against a real Visdom server on loopback (and, if present, Chromium).

Each test starts its own server on a free port with a temp env_path, and the `servers`
fixture stops every server it started, even when the test fails.
"""

import json
import os
from pathlib import Path

import pytest
import requests
import visdom

from dashboard.serve import CHROMIUM, CHROMIUM_ARGS
from engine.sinks.visdom import server as visdom_server

ASSETS = Path(os.environ.get("LIVEPROP_VISDOM_ASSETS", visdom_server.DEFAULT_ASSETS))
ARTIFACTS = Path(os.environ.get("LIVEPROP_ARTIFACTS", Path(__file__).parent / "artifacts"))
NO_PROXY = {"http": None, "https": None}


@pytest.fixture
def servers(tmp_path):
    """start(**kwargs) -> a started VisdomServer; all of them are stopped afterwards."""
    started = []

    def start(**kwargs):
        kwargs.setdefault("port", 0)
        kwargs.setdefault("env_path", tmp_path / "env")
        server = visdom_server.start(**kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def client(server, **kwargs):
    return visdom.Visdom(
        server="http://127.0.0.1", port=server.port, raise_exceptions=True, use_incoming_socket=False, **kwargs
    )


def listen_addresses(port):
    """Addresses with a TCP socket listening on `port`, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for row in open(table).read().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian hex
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add("ipv6:" + address)
    return found


def test_line_round_trips_through_the_data_api(servers):
    server = servers()
    viz = client(server)
    xs, ys = [0, 1, 2, 3], [2.5, 1.25, 0.5, 0.25]
    assert viz.line(X=xs, Y=ys, win="loss", opts={"title": "loss"}) == "loss"
    viz.line(X=[4], Y=[0.125], win="loss", update="append")

    trace = json.loads(viz.get_window_data("loss"))["content"]["data"][0]
    assert trace["x"] == xs + [4]
    assert trace["y"] == ys + [0.125]


def test_page_answers_200_and_listens_on_loopback_only(servers):
    server = servers()
    page = requests.get(server.url + "/", proxies=NO_PROXY, timeout=5)
    assert page.status_code == 200  # visdom's own template gives 403 on tornado >= 6.5
    assert "../user/style.css" not in page.text
    assert requests.get(server.url + "/user/style.css", proxies=NO_PROXY, timeout=5).status_code == 200
    assert listen_addresses(server.port) == {"127.0.0.1"}


def test_visdom_package_files_stay_untouched(servers):
    servers()
    installed = Path(visdom.__file__).parent / "static" / "index.html"
    assert visdom_server.BAD_CSS_LINK in installed.read_text()


def test_stop_ends_the_process_and_frees_the_port(servers):
    server = servers()
    server.stop()
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert listen_addresses(server.port) == set()
    assert not server.log_path.exists()


def test_starts_without_assets_and_says_how_to_fetch_them(servers, tmp_path, caplog):
    server = servers(assets_dir=tmp_path / "no-assets")
    assert "python scripts/visdom_assets.py" in caplog.text
    assert client(server).text("hello", win="t") == "t"


def test_login_accepts_right_credentials_and_refuses_others(servers):
    server = servers(login=("alice", "s3cret-pw"))
    assert "s3cret-pw" not in open(f"/proc/{server.pid}/cmdline").read()
    assert "s3cret-pw" not in open(f"/proc/{server.pid}/environ").read()  # it came through a pipe

    viz = client(server, username="alice", password="s3cret-pw")
    viz.line(X=[0, 1], Y=[1.0, 0.5], win="loss")
    assert json.loads(viz.get_window_data("loss"))["content"]["data"][0]["y"] == [1.0, 0.5]

    with pytest.raises(RuntimeError, match="Authentication failed"):
        client(server, username="alice", password="wrong")
    anonymous = requests.post(
        server.url + "/events", proxies=NO_PROXY, timeout=5, data=json.dumps({"eid": "main", "win": "x", "data": []})
    )
    assert anonymous.status_code == 400


XSS = "<img src=x onerror=alert(document.domain)>"


def post_text_window(server, win, origin=None, host=None):
    """A text window, POSTed as a page of another site can without asking (a "simple" request: text/plain,
    no preflight), with the Origin and Host headers a browser would send."""
    headers = {"Content-Type": "text/plain"}
    if origin is not None:
        headers["Origin"] = origin
    if host is not None:
        headers["Host"] = host
    body = json.dumps({"eid": "main", "win": win, "data": [{"type": "text", "content": XSS}]})
    return requests.post(server.url + "/events", data=body, headers=headers, proxies=NO_PROXY, timeout=5)


def windows(server):
    return json.loads(client(server).get_window_data(env="main") or "{}")


@pytest.mark.parametrize(
    "origin, host",
    [
        ("http://evil.example", None),  # any page the user visits
        ("null", None),  # a sandboxed frame or a file:// page
        ("http://evil.example:{port}", "evil.example:{port}"),  # a name rebound to 127.0.0.1 (DNS rebinding)
    ],
)
def test_a_page_of_another_site_can_neither_write_nor_listen(servers, origin, host):
    server = servers()
    fill = lambda text: text and text.format(port=server.port)  # noqa: E731
    refused = post_text_window(server, "xss", fill(origin), fill(host))
    assert refused.status_code == 403 and XSS not in refused.text
    assert "xss" not in windows(server)
    websocket = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade = {**websocket, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": fill(origin)}
    if host:
        upgrade["Host"] = fill(host)
    assert requests.get(server.url + "/socket", headers=upgrade, proxies=NO_PROXY, timeout=5).status_code == 403


def test_its_own_page_python_clients_and_a_tunnel_still_write(servers):
    server = servers()
    assert post_text_window(server, "own", origin=server.url).status_code == 200  # the Visdom page itself
    tunnel = f"localhost:{server.port + 1}"  # ssh -L: the browser's port is not the server's
    assert post_text_window(server, "tunnel", origin=f"http://{tunnel}", host=tunnel).status_code == 200
    assert post_text_window(server, "script").status_code == 200  # no Origin: not a browser
    assert client(server).text("hello", win="client") == "client"  # the visdom package's client
    assert {"own", "tunnel", "script", "client"} <= windows(server).keys()


def test_start_fails_clearly_when_the_port_is_taken(servers):
    server = servers()
    with pytest.raises(RuntimeError, match=f"port {server.port}: Address already in use"):
        servers(port=server.port)


def test_start_reports_the_log_when_the_server_dies(servers, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(RuntimeError, match="(?s)exited with code 1.*NotADirectoryError"):
        servers(env_path=not_a_dir)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
@pytest.mark.skipif(
    not (ASSETS / "COMPLETE").is_file(), reason=f"no Visdom assets in {ASSETS}; run python scripts/visdom_assets.py"
)
def test_chromium_draws_the_line(servers):
    from playwright.sync_api import sync_playwright

    server = servers(assets_dir=ASSETS)
    client(server).line(X=list(range(50)), Y=[1 / (1 + x) for x in range(50)], win="loss", opts={"title": "loss"})

    bad = []  # failed or non-local requests, HTTP errors, page errors
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("requestfailed", lambda r: bad.append(f"failed {r.url}"))
            page.on("response", lambda r: r.status >= 400 and bad.append(f"{r.status} {r.url}"))
            page.on("pageerror", lambda e: bad.append(f"page error {e}"))
            page.route(
                lambda url: not url.startswith(server.url),
                lambda route: (bad.append(f"external {route.request.url}"), route.abort()),
            )
            page.goto(server.url + "/", wait_until="load")
            line = page.wait_for_selector(".main-svg .scatterlayer .trace path.js-line", timeout=20_000)
            assert len(line.get_attribute("d")) > 100  # a real polyline, not an empty path
            page.wait_for_timeout(500)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / ".gitignore").write_text("*\n")
            page.screenshot(path=str(ARTIFACTS / "visdom_line.png"))
        finally:
            browser.close()
    assert bad == []
