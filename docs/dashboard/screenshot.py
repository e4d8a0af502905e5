"""README's dashboard screenshot, taken during a real ``competition_burst`` run.

    .venv/bin/python docs/dashboard/screenshot.py    # writes docs/dashboard.png

Starts ``run.py serve`` on a fresh data directory, points ``run.py bench
competition_burst --target`` at it (pipelined path), signs a headless Chromium
(Debian's ``chromium`` and ``chromedriver``) into the dashboard with the admin
token, and takes the queue view ``SHOT_AT_S`` seconds into the burst phase.
Everything it starts it stops, by pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.server import ServeProcess  # noqa: E402

OUT = ROOT / "docs" / "dashboard.png"
SHOT_AT_S = 14  # into the burst: the ramp is at its top, the charts have two minutes' room


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="shot-") as tmp:
        server = ServeProcess(Path(tmp) / "data", env={"RESULTS_DIR": str(ROOT / "results")})
        bench = driver = None
        try:
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                             "--window-size=1280,860", "--hide-scrollbars"):
                options.add_argument(argument)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"),
                                      options=options)
            driver.get(server.url + "/dashboard")
            driver.find_element(By.ID, "token").send_keys(server.admin_token, Keys.ENTER)
            WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "app")
                                            .is_displayed())
            bench = subprocess.Popen(  # the token through the environment, not argv
                [sys.executable, "run.py", "bench", "competition_burst", "--paths",
                 "pipelined", "--target", server.url, "--database-url",
                 server.database_url, "--out", str(Path(tmp) / "out")],
                cwd=ROOT, env={**os.environ, "BENCH_TOKEN": server.admin_token},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            in_burst = threading.Event()

            def pump() -> None:  # read it all, so the pipe never fills
                assert bench is not None and bench.stdout is not None
                for line in bench.stdout:
                    print(line, end="")
                    if "burst" in line:
                        in_burst.set()

            threading.Thread(target=pump, daemon=True).start()
            if not in_burst.wait(300):
                raise RuntimeError("the bench never reached its burst")
            time.sleep(SHOT_AT_S)  # a moment in the burst, not a sync point of a test
            driver.save_screenshot(str(OUT))
            print(f"wrote {OUT}")
        finally:
            if driver is not None:
                driver.quit()
            if bench is not None and bench.poll() is None:
                bench.terminate()
                bench.wait(60)
            server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
