"""Open ``mlflow ui`` on a tracking store in headless Chromium and check that the link the stages
log lands on the runs table, not on MLflow 3's GenAI overview; save a screenshot of each page.

    python scripts/mlflow_ui_check.py --store sqlite:///mlflow.db --experiment hyperguide-deblur \
        --out mlflow_ui

Starts ``mlflow server`` (what ``mlflow ui`` runs) on a free loopback port with the store, loads
two addresses in Chromium (``--chromium``, Debian's ``/usr/bin/chromium`` by default): the
experiment's plain address and :func:`stages.tracking.runs_url`. For each it saves
``OUT/<page>.png`` and reads the rendered page's text, and prints ``key=value`` lines: the run
names found on the page, whether it shows the GenAI overview (its Usage / Quality / Tool calls
tabs) and the verdict
``runs_link_lands_on_runs=1|0`` (last). Exits 1 when the link does not show the runs; stops the
server in every case.
"""
from __future__ import annotations

import argparse
import html
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.tracking import runs_url  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,900")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


def render(chromium: str, url: str, png: Path, budget_ms: int) -> str:
    """Screenshot ``url`` into ``png``; the page's visible text once its scripts have run."""
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        subprocess.run([*common, f"--screenshot={png}", url], capture_output=True, timeout=180, check=True)
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="sqlite:///mlflow.db", help="the tracking store (backend store URI)")
    p.add_argument("--experiment", default="hyperguide-deblur")
    p.add_argument("--out", default="mlflow_ui", help="folder for the screenshots")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--budget-ms", type=int, default=20000, help="virtual time the page gets to render")
    args = p.parse_args()

    from mlflow import MlflowClient

    client = MlflowClient(args.store)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        sys.exit(f"{args.store}: no experiment {args.experiment!r} (run `dvc repro` first)")
    names = sorted({r.info.run_name for r in client.search_runs([exp.experiment_id], max_results=200)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.store,
                              "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"{base}/health", server)
        pages = {"experiment_plain": f"{base}/#/experiments/{exp.experiment_id}",
                 "runs_link": runs_url(exp.experiment_id, base)}
        found = {}
        for page, url in pages.items():
            text = render(args.chromium, url, out / f"{page}.png", args.budget_ms)
            shown = [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]
            found[page] = shown
            print(f"{page}_url={url}")
            print(f"{page}_run_names_shown={','.join(shown)}")
            # the GenAI overview's tabs: where MLflow 3.17 lands without the query
            print(f"{page}_shows_genai_overview={int(all(t in text for t in ('Usage', 'Quality', 'Tool calls')))}")
            print(f"{page}_screenshot={out / f'{page}.png'}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = len(found["runs_link"]) == len(names) > 0
    print(f"runs_in_experiment={len(names)}")
    print(f"runs_link_lands_on_runs={int(ok)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
