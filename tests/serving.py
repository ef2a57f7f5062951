"""A real ``transformers serve`` process on 127.0.0.1 for the tests of OpenAI-compatible clients (the
teacher, the judge): a tiny local model saved to disk, served on a free port, stopped afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(model, tokenizer, model_dir: Path) -> Iterator[tuple[str, str]]:
    """``(base_url, model name)`` of ``transformers serve`` serving ``model`` (saved to ``model_dir``);
    skips the test when the transformers CLI is missing, fails with the server's log if it never starts."""
    cli = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    if not Path(cli).exists():
        pytest.skip("the transformers CLI is not installed")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    log_path = model_dir.parent / "serve.log"
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [cli, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=model_dir.parent,
        )
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.time() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("transformers serve did not start: " + log_path.read_text()[-2000:])
                time.sleep(0.5)
            yield url, str(model_dir)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
