"""The README's picture of the page (docs/serve.png): a real server, headless Chromium, a 七绝 acrostic.

    python scripts/serve_screenshot.py --model-path CKPT [--out docs/serve.png]

Needs the serve extra, selenium and Debian's chromium + chromium-driver, and CJK fonts for the glyphs
(apt-get install fonts-noto-cjk). Waits for the page to read its settings (GET /api/settings), writes four
poems of 春花秋月 with seed 7 (set in 更多设置, folded again afterwards), locks the first line of the first poem
and takes the whole page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_serve import Server, open_page  # noqa: E402  (the same way the browser test starts one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    parser.add_argument("--text", default="春花秋月")
    parser.add_argument("--seed", default="7")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    work = Path(tempfile.mkdtemp(prefix="serve-shot-"))
    server = Server(args.model_path, log=work / "server.log")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--window-size=1280,900", f"--user-data-dir={work / 'profile'}"):  # fmt: skip
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        open_page(d, server.url + "/")
        WebDriverWait(d, 20).until(lambda d: "字" in d.find_element(By.ID, "model-info").text)
        d.find_element(By.XPATH, "//label[span[text()='藏头']]").click()
        d.find_element(By.ID, "text").send_keys(args.text)
        d.find_element(By.XPATH, "//label[span[text()='七绝']]").click()
        count = d.find_element(By.ID, "num_poems")
        count.clear()
        count.send_keys("4")
        d.find_element(By.CSS_SELECTOR, "#advanced summary").click()
        d.find_element(By.ID, "seed").send_keys(args.seed)
        d.find_element(By.ID, "write").click()
        WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#poems .poem")) == 4)
        d.find_element(By.CSS_SELECTOR, "#poems .poem .lock").click()
        d.find_element(By.ID, "seed").clear()  # the page as a person leaves it: seed back to random
        d.find_element(By.CSS_SELECTOR, "#advanced summary").click()
        d.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        height = d.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the whole page in one picture
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(args.out)
        print(f"wrote {args.out} (1280 x {height})")
    finally:
        d.quit()
        server.stop()


if __name__ == "__main__":
    main()
