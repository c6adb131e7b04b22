"""ops.hostgate: one turn at a time per host, across processes, with a pause between turns."""

import subprocess
import sys
import time

from swapline.ops.hostgate import host_key, host_turn


def test_host_key_is_host_and_port():
    assert host_key("http://Example.com/a.mp4") == host_key("http://example.com:80/b") == "example.com:80"
    assert host_key("https://example.com/a") == "example.com:443"
    assert host_key("http://127.0.0.1:8001/a") != host_key("http://127.0.0.1:8002/a")


def test_pause_between_turns_on_one_host_only(tmp_path):
    with host_turn("http://127.0.0.1:9/a", pause=1.0, folder=tmp_path):
        pass
    started = time.monotonic()
    with host_turn("http://127.0.0.1:10/a", pause=1.0, folder=tmp_path):  # another host: no wait
        other = time.monotonic() - started
    with host_turn("http://127.0.0.1:9/b", pause=1.0, folder=tmp_path):
        same = time.monotonic() - started
    assert other < 0.2 and 0.8 <= same < 1.5, (other, same)


def test_a_turn_held_by_another_process_is_waited_for(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom swapline.ops.hostgate import host_turn\n"
         f"with host_turn('http://127.0.0.1:9/x', pause=0, folder={str(tmp_path)!r}):\n"
         "    print('held', flush=True); time.sleep(1.5)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with host_turn("http://127.0.0.1:9/y", pause=0, folder=tmp_path):
            waited = time.monotonic() - started
    finally:
        holder.wait(10)
    assert waited >= 1.0, waited
