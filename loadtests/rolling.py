"""Two heed replicas behind nginx (Debian's), restarted one at a time under locust load.

    python -m loadtests.rolling --duration 60 --model-repo models      # part of `make reliability`

Everything listens on 127.0.0.1. nginx balances the two replicas and passes a request on to the
other replica when one refuses the connection or answers 503 (`proxy_next_upstream error
http_503 non_idempotent`): a replica that drains after SIGTERM answers new requests 503 and
finishes the ones it admitted, then exits; a restarted one answers 503 until its models are ready.
locust (loadtests/locustfile.py, its traffic mix and response checks) runs headless for the whole
time while each replica is stopped and restarted in turn. The run passes when locust counts zero
failed requests and every replica exited 0.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.reliability import Server, build_repo
from loadtests.server import ROOT, free_port

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream heed {{
        server 127.0.0.1:{a} max_fails=0;
        server 127.0.0.1:{b} max_fails=0;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://heed;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
            proxy_next_upstream error http_503 non_idempotent;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


class Replica:
    """One heed replica on a fixed port, so that nginx's upstream stays the same across restarts."""

    def __init__(self, repo: Path, workdir: Path, name: str):
        self.repo, self.workdir, self.name = repo, workdir, name
        self.port = free_port()
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.server = self._start()

    def _start(self) -> Server:
        return Server(self.repo, self.workdir / f"{self.name}-{self.restarts}.log", self.port, HEED_KV_ROWS="16")

    def restart(self) -> None:
        """SIGTERM (drain, exit), then a new process on the same port, until it is ready."""
        self.exit_codes.append(self.server.stop(timeout=120))
        self.restarts += 1
        self.server = self._start()
        self.server.wait_ready()


def run(repo: Path, duration: float, users: int, workdir: Path) -> tuple[bool, str]:
    replicas = [Replica(repo, workdir, "a"), Replica(repo, workdir, "b")]
    nginx = locust = None
    try:
        for replica in replicas:
            replica.server.wait_ready()
        port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=workdir, a=replicas[0].port, b=replicas[1].port, port=port))
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-e", "stderr"])
        url = f"http://127.0.0.1:{port}"
        env = os.environ | {"LOADTEST_USERS": str(users), "LOADTEST_RAMP": "2", "LOADTEST_DURATION": str(int(duration))}
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "--host", url,
             "--csv", str(workdir / "locust"), "--only-summary", "--stop-timeout", "60"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        time.sleep(duration / 5)
        for replica in replicas:
            print(f"restarting replica {replica.name} under load ...", file=sys.stderr, flush=True)
            replica.restart()
            time.sleep(duration / 10)
        code = locust.wait(duration * 2 + 120)
        locust = None
    finally:
        if locust is not None:
            locust.kill()
            locust.wait()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(30)
        for replica in replicas:
            replica.exit_codes.append(replica.server.stop())
    with (workdir / "locust_stats.csv").open() as f:
        total = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    exits = {r.name: r.exit_codes for r in replicas}
    ok = code == 0 and failures == 0 and requests > 0 and all(c == 0 for r in replicas for c in r.exit_codes)
    summary = (
        f"rolling restart: {requests} locust requests, {failures} failed, "
        f"replica exit codes {exits}, locust exit {code}: {'ok' if ok else 'FAILED'}"
    )
    return ok, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.rolling", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of locust load")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--model-repo", type=Path, help="default: a tiny model repository built now")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="heed-rolling-") as tmp:
        workdir = Path(tmp)
        repo = args.model_repo or build_repo(workdir / "models", forced=False)  # locust sets max_new_tokens 24
        ok, summary = run(repo, args.duration, args.users, workdir)
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
