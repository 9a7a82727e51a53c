"""Sequential 10-row embed fetches over HTTP against a `silo serve` binary: req/s, p50, p99.

It starts the binary on a fresh embedded store, sets up an org with a files dataset of 100
tenants x 100 rows, a group, a user and a session through the API, warms up with 50 fetches and
times N more on one keep-alive connection. One connection, so it shows what each request costs
(store reads, audit commits), not throughput under load.

Usage: bench/embed_latency.py SILO_BINARY PORT N"""
import http.client, json, os, shutil, subprocess, sys, tempfile, time

silo, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp(prefix="apibench-")
admin = subprocess.check_output([silo, "api-keys", "create", "--admin", "--data-dir", d + "/data"],
                                stderr=subprocess.DEVNULL).decode().strip()
srv = subprocess.Popen([silo, "serve", "--data-dir", d + "/data", "--listen", f"127.0.0.1:{port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/health"); c.getresponse().read(); break
        except OSError:
            time.sleep(0.1)
    c = http.client.HTTPConnection("127.0.0.1", port)
    def call(method, path, key, body=None, ctype="application/json"):
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        c.request(method, path, body=data, headers={"authorization": f"Bearer {key}", "content-type": ctype})
        r = c.getresponse(); raw = r.read()
        if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {raw[:200]}")
        return json.loads(raw) if raw else None
    call("POST", "/v1/orgs", admin, {"name": "acme"})
    key = call("POST", "/v1/orgs/acme/api-keys", admin, {"name": "b"})["token"]
    call("POST", "/v1/datasources", key, {"name": "up", "kind": "files"})
    ds = call("POST", "/v1/datasets", key, {"datasource": "up", "name": "orders"})["id"]
    csv = "id,tenant,amount\n" + "".join(f"{i},t{i % 100},{i * 1.5}\n" for i in range(100 * 100))
    call("POST", f"/v1/datasets/{ds}/upload?partition_by=tenant", key, csv, "text/csv")
    call("PUT", "/v1/groups/tenants", key, {"grants": [{"dataset_id": ds, "permission": "read",
                                                          "row_filter": ["tenant = {{user.tenant}}"]}]})
    call("PUT", "/v1/embed-users/ann", key, {"attributes": {"tenant": "t7"}, "groups": ["tenants"]})
    tok = call("POST", "/v1/sessions", key, {"embed_user": "ann"})["token"]
    path = f"/v1/embed/datasets/{ds}/fetch"
    for _ in range(50):
        assert len(call("POST", path, tok, {"limit": 10})["rows"]) == 10
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        call("POST", path, tok, {"limit": 10})
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    lat.sort()
    print(f"{os.path.basename(silo)}: {n / total:.0f} req/s, p50 {lat[n // 2] * 1000:.2f} ms, p99 {lat[int(n * 0.99)] * 1000:.2f} ms")
finally:
    srv.terminate(); srv.wait(); shutil.rmtree(d, ignore_errors=True)
