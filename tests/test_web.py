"""The daemon's listener, asked by a real HTTP client over loopback: probes, a scrape, refusals, TLS and tokens."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By

from drorch.errors import UsageError
from drorch.model.groups import Consistency
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import SCHEDULER_LEASE, RunState, StepState, utcnow
from drorch.store.rows import ReadinessCheck, RecoveryPoint, Run, Step
from drorch.store.sql_store import Store
from drorch.web.listener import Listen, Web
from drorch.web.metrics import StoreCollector, exposition
from drorch.web.pages import Pages
from tests.support.browser import chromium, fits, rows
from tests.support.shop import PLAYBOOK
from tests.support.web import get

TOKEN = "s3cret-token-0123456789"


def metrics(store: Store) -> Callable[[], bytes]:
    return lambda: exposition(StoreCollector(store, dict))


def serve(store: Store, listen: Listen) -> Web:
    web = Web(listen, store, metrics(store), max_age_s=0, stale_s=0)
    web.start()
    return web


@pytest.fixture
def web(store: Store) -> Iterator[Web]:
    w = serve(store, Listen("127.0.0.1", 0))
    yield w
    w.close()


def test_probes_say_whether_the_store_answers_and_a_leader_holds_the_lease(web: Web, store: Store) -> None:
    base = f"http://127.0.0.1:{web.port}"
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/readyz") == (503, "no daemon has led yet\n")
    assert store.lease(SCHEDULER_LEASE, "h:1", timedelta(seconds=10))
    assert get(f"{base}/readyz") == (200, "ready\n")
    store.lease(SCHEDULER_LEASE, "h:1", timedelta(seconds=-30))  # renewed into the past: it ran out
    code, said = get(f"{base}/readyz")
    assert code == 503 and "the leader's lease ran out 30 s ago" in said
    assert get(f"{base}/nowhere<b>")[0] == 404


def test_a_scrape_parses_and_a_store_outage_is_a_503_with_the_reason(web: Web, store: Store, tmp_path: Path) -> None:
    code, text = get(f"http://127.0.0.1:{web.port}/metrics")
    assert code == 200
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"drorch_rpo_age_seconds", "drorch_ready", "drorch_runs_started", "drorch_daemon_up"} <= names
    store.engine.dispose()
    db = Path(store.engine.url.database or "")
    db.rename(tmp_path / "away.db")  # the store's file is gone: the next connection finds a file that is not
    db.write_bytes(b"not a database at all" * 100)
    code, said = get(f"http://127.0.0.1:{web.port}/metrics")
    assert code == 503 and "state store" in said, said
    assert get(f"http://127.0.0.1:{web.port}/healthz") == (200, "ok\n")  # the process still serves


def test_a_port_in_use_is_refused_naming_it(store: Store) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            Web(Listen("127.0.0.1", port), store, metrics(store))


def test_listen_addresses_parse_and_loopback_is_the_default() -> None:
    assert Listen.parse("9464") == Listen("127.0.0.1", 9464)
    assert Listen.parse("0.0.0.0:9464").host == "0.0.0.0"
    assert Listen.parse("[::1]:9464") == Listen("::1", 9464)
    for bad in ("nine", "1.2.3.4:99999", ":", "host:"):
        with pytest.raises(UsageError, match="give HOST:PORT"):
            Listen.parse(bad)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_any_address_but_loopback_needs_tls_and_a_token_only_its_owner_reads(store: Store, tmp_path: Path,
                                                                           pki: tuple[Path, Path]) -> None:
    cert, key = pki
    token = tmp_path / "token"
    with pytest.raises(UsageError, match="is not loopback: it needs --tls-cert, --tls-key and --token-file"):
        Web(Listen("0.0.0.0", 0), store, metrics(store))
    with pytest.raises(UsageError, match=r"token file .*token: cannot read: No such file"):
        Web(Listen("0.0.0.0", 0, cert, key, token), store, metrics(store))
    token.write_text(TOKEN)
    token.chmod(0o644)
    with pytest.raises(UsageError, match=r"may be read by others \(mode -rw-r--r--\): chmod 600"):
        Web(Listen("0.0.0.0", 0, cert, key, token), store, metrics(store))


def test_tls_and_the_token_are_enforced_for_a_real_client(store: Store, tmp_path: Path,
                                                         pki: tuple[Path, Path]) -> None:
    cert, key = pki
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    web = serve(store, Listen("127.0.0.1", 0, cert, key, token))
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{web.port}"
        assert get(f"{url}/metrics", context=trusted)[0] == 401
        assert get(f"{url}/metrics", token="wrong-token-0123456789", context=trusted)[0] == 401
        code, text = get(f"{url}/metrics", token=TOKEN, context=trusted)
        assert code == 200 and "drorch_ready" in text
        # A browser asked by the 401 sends the token as a Basic password, under any user name
        basic = urllib.request.HTTPBasicAuthHandler()
        basic.add_password("drorch", url, "operator", TOKEN)
        browser = urllib.request.build_opener(basic, urllib.request.HTTPSHandler(context=trusted))
        with browser.open(f"{url}/metrics", timeout=10) as res:
            assert res.status == 200
        basic.add_password("drorch", url, "operator", "wrong-token-0123456789")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            browser.open(f"{url}/metrics", timeout=10)
        assert get(f"{url}/healthz", context=trusted) == (200, "ok\n")  # probes need no token
        with socket.create_connection(("127.0.0.1", web.port)):  # connects and says nothing: holds up no one
            assert get(f"{url}/healthz", context=trusted) == (200, "ok\n")
        with pytest.raises(OSError):  # plain HTTP to a TLS listener gets nothing
            urllib.request.urlopen(f"http://127.0.0.1:{web.port}/healthz", timeout=5)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # an untrusted client refuses
            urllib.request.urlopen(f"{url}/healthz", timeout=5)
    finally:
        web.close()


def test_the_status_page_and_its_document_show_the_store_with_names_as_text(store: Store) -> None:
    """The page embeds its first state and refreshes from /status.json; a name with markup (a site's container
    matched by a pattern may carry one) stays text."""
    pb = parse_playbook(PLAYBOOK + "protect: {interval_s: 60, rpo_s: 300}\n", "shop.yaml")
    store.add_points([RecoveryPoint(playbook="shop", workload="<b>cache</b>", kind="container", site="b",
                                    taken_at=utcnow() - timedelta(seconds=900))])
    store.add_run(Run(operation="failover", playbook="shop", playbook_path="shop.yaml", source_site="a",
                      target_site="b", state=RunState.SUCCEEDED, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload="web", kind="vm", strategy="live", source_site="a", target_site="b",
                        action="move", state=StepState.SUCCEEDED)])
    store.add_run(Run(operation="failover", playbook="shop", playbook_path="shop.yaml", source_site="a",
                      target_site="b", state=RunState.RUNNING, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload="db", kind="vm", strategy="live", source_site="a", target_site="b",
                        state=StepState.RUNNING, bytes_done=50, bytes_total=200)])
    web = Web(Listen("127.0.0.1", 0), store, metrics(store),
              Pages(store, lambda: {pb.name: pb}))
    web.start()
    try:
        code, doc = get(f"http://127.0.0.1:{web.port}/status.json")
        assert code == 200
        (book,) = json.loads(doc)["playbooks"]
        assert [s["site"] for s in book["sites"]] == ["a", "b"]
        w, web_vm = book["workloads"]
        assert w["workload"] == "<b>cache</b>" and w["stale"] and 899 < w["rpo_s"] < 960
        assert (w["runs_on"], w["moved"]) == ("a", False)  # never moved: where the playbook says it lives
        assert (web_vm["workload"], web_vm["runs_on"], web_vm["moved"], web_vm["rpo_s"]) == ("web", "b", True, None)
        assert book["rpo"]["workload"] == "<b>cache</b>" and book["rpo"]["stale"] and book["target_s"] == 300
        (run,) = json.loads(doc)["running"]
        assert run["run"] == 2
        assert run["steps"][0]["bytes_done"] == 50 and run["steps"][0]["state"] == "running"
        code, text = get(f"http://127.0.0.1:{web.port}/")
        assert code == 200 and "<b>cache" not in text  # embedded as \u003cb\u003e, rendered by the script as text
        assert "\\u003cb\\u003ecache" in text and 'src="http' not in text and "<link" not in text
        assert get(f"http://127.0.0.1:{web.port}/runs/1")[0] == 200
        assert get(f"http://127.0.0.1:{web.port}/runs/99")[0] == 404
    finally:
        web.close()


def test_in_a_browser_a_name_with_markup_is_text_and_the_page_fits_a_phone(store: Store, tmp_path: Path) -> None:
    pb = parse_playbook(PLAYBOOK + "protect: {interval_s: 60, rpo_s: 300}\n", "shop.yaml")
    name = '<img src=x onerror="document.title=1"><b>cache</b>-' + "x" * 60
    store.add_points([RecoveryPoint(playbook="shop", workload=name, kind="container", site="b",
                                    taken_at=utcnow() - timedelta(seconds=900), consistency=Consistency.APPLICATION,
                                    cut="app@<i>1</i>")])
    web = Web(Listen("127.0.0.1", 0), store, metrics(store), Pages(store, lambda: {pb.name: pb}))
    web.start()
    try:
        with chromium(tmp_path / "chromium") as browser:
            browser.get(f"http://127.0.0.1:{web.port}/")
            ((workload, runs_on, points_on, rpo, _target, kept, worth),) = rows(browser, "tr.workload")
            assert workload == f"container {name}" and runs_on == "site a (home)" and points_on == "b"
            assert rpo.endswith("(stale)") and kept == "1"
            assert worth == "application-consistent (cut app@<i>1</i>)"
            (rpo_line,) = browser.find_elements(By.CSS_SELECTOR, "p.rpo")
            assert re.fullmatch(r"RPO 9\d\d s past its target of 300 s, from its oldest newest point \(container "
                                r".+\)", rpo_line.text), rpo_line.text
            assert rpo_line.find_element(By.CSS_SELECTOR, "span").get_attribute("class") == "bad"
            assert browser.title == "drorch"  # the name's markup ran nothing
            assert not browser.find_elements(By.CSS_SELECTOR, "#books img, #books b, #books i")
            assert fits(browser), "the page scrolls sideways on a phone"
    finally:
        web.close()


def test_in_a_browser_each_dns_record_says_where_it_points_and_a_wrong_one_is_flagged(store: Store,
                                                                                       tmp_path: Path) -> None:
    pb = parse_playbook(PLAYBOOK, "shop.yaml")
    records = [{"name": "web.lab.example.", "type": "A", "values": ["10.32.0.10"], "workload": "web",
                "points_at": "b", "runs_on": "b", "right": True},
               {"name": "db.lab.example.", "type": "A", "values": ["10.31.0.5"], "workload": "db",
                "points_at": "a", "runs_on": "b", "right": False}]
    store.save(ReadinessCheck(playbook="shop", ready=False, problems=json.dumps(["dns db.lab.example. A does not "
                                                                                "name where db runs"]),
                              records=json.dumps(records)))
    web = Web(Listen("127.0.0.1", 0), store, metrics(store), Pages(store, lambda: {pb.name: pb}))
    web.start()
    try:
        with chromium(tmp_path / "chromium") as browser:
            browser.get(f"http://127.0.0.1:{web.port}/")
            shown = [(p.text, p.find_element(By.CSS_SELECTOR, "span").get_attribute("class"))
                     for p in browser.find_elements(By.CSS_SELECTOR, "p.record")]
            assert shown == [("DNS web.lab.example. A 10.32.0.10: points at site b, where web runs", "good"),
                             ("DNS db.lab.example. A 10.31.0.5: points at site a, and db runs on site b", "bad")]
    finally:
        web.close()


def test_in_a_browser_markup_in_any_field_of_a_damaged_row_is_text(store: Store, tmp_path: Path) -> None:
    """A row written by another program may hold text where drorch writes a number (a step's seq, a point count):
    the page shows it as text and runs none of it."""
    import sqlite3

    markup = '<img src=x onerror="document.title=1">'
    store.add_run(Run(operation="failover", playbook="shop", playbook_path="shop.yaml", source_site="a",
                      target_site="b", state=RunState.RUNNING, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload="db", kind="vm", strategy="live", source_site="a", target_site="b",
                        state=StepState.RUNNING)])
    with sqlite3.connect(store.engine.url.database or "") as conn:
        conn.execute("UPDATE steps SET seq = ?, bytes_done = ?, bytes_total = ?", (markup, markup, markup))
    web = Web(Listen("127.0.0.1", 0), store, metrics(store), Pages(store, dict, max_age_s=0, stale_s=0))
    web.start()
    try:
        with chromium(tmp_path / "chromium") as browser:
            browser.get(f"http://127.0.0.1:{web.port}/")
            ((seq, workload, state, _progress, _said),) = rows(browser, "tr.step")
            assert (seq, workload, state) == (markup, "vm db", "running")
            assert browser.title == "drorch"  # the markup ran nothing
            assert not browser.find_elements(By.CSS_SELECTOR, "#running img")
    finally:
        web.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "TRACE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_served(method: str, web: Web) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        for path in ("/", "/metrics", "/healthz", "/status.json"):
            conn.request(method, path, body=b"x" if method in ("POST", "PUT", "PATCH") else None)
            res = conn.getresponse()
            assert (res.status, res.getheader("Allow"), res.read()) == (405, "GET, HEAD",
                                                                        b"only GET and HEAD are served\n"), path
        conn.request("HEAD", "/healthz")
        res = conn.getresponse()
        assert (res.status, res.getheader("Content-Length"), res.read()) == (200, "3", b"")
    finally:
        conn.close()


def test_the_daemons_playbooks_come_first_others_expire_or_hide_and_a_place_says_where_it_is_known_from(
        store: Store, tmp_path: Path) -> None:
    served = parse_playbook(PLAYBOOK.replace("name: shop", "name: zeta"), "zeta.yaml")
    store.add_run(Run(operation="failover", playbook="zeta", playbook_path="zeta.yaml", source_site="a",
                      target_site="b", state=RunState.SUCCEEDED, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload="web", kind="container", strategy="redeploy", source_site="a",
                        target_site="b", action="move", state=StepState.SUCCEEDED)])
    store.add_points([RecoveryPoint(playbook="alpha", workload="x", kind="vm", site="b"),
                      RecoveryPoint(playbook="old", workload="y", kind="vm", site="b",
                                    taken_at=utcnow() - timedelta(days=8))])
    for only_served, shown in ((False, ["zeta", "alpha"]), (True, ["zeta"])):
        web = Web(Listen("127.0.0.1", 0), store, metrics(store),
                  Pages(store, lambda: {served.name: served}, others=not only_served))
        web.start()
        try:
            code, doc = get(f"http://127.0.0.1:{web.port}/status.json")
            assert code == 200 and [b["playbook"] for b in json.loads(doc)["playbooks"]] == shown
            (moved,) = json.loads(doc)["playbooks"][0]["workloads"]
            assert (moved["runs_on"], moved["seen_by_run"]) == ("b", 1)
            if only_served:
                continue
            with chromium(tmp_path / "chromium") as browser:
                browser.get(f"http://127.0.0.1:{web.port}/")
                runs_on = {cells[0]: cells[1] for cells in rows(browser, "tr.workload")}
                assert runs_on == {"container web": "last seen on site b by run 1", "vm x": "-"}, runs_on
        finally:
            web.close()
