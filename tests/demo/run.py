"""``announcer demo`` as a process: the command line, what its output must show,
and the check that it left nothing behind."""

from __future__ import annotations

import csv
import re
import socket
import subprocess
import sys
from pathlib import Path

INVENTORY = Path(__file__).resolve().parents[2] / "examples" / "inventory"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
#: Lets nobody read and search every folder (nothing more): needed only when
#: the virtualenv's Python lives where nobody may not look, such as /root/.pyenv.
READ_ANYWHERE = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "announcer", "demo", *args]


def stop(process: subprocess.Popen[str]) -> None:
    """End a demo still running (a test that failed): SIGTERM, so that it
    removes what it started, and SIGKILL only if it does not exit."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(*args: str, timeout_s: float = 100) -> tuple[int, str, str]:
    """``announcer demo ARGS`` to its end: exit status, output, errors."""
    process = subprocess.Popen(
        demo(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, errors = process.communicate(timeout=timeout_s)
    finally:
        stop(process)
    return process.returncode, out, errors


def as_nobody(command: list[str]) -> list[str]:
    """``command`` run as the user nobody, without root's privileges."""
    probe = [sys.executable, "-c", "import announcer.cli"]
    plain = subprocess.run([*NOBODY, *probe], capture_output=True, check=False, timeout=60)
    return [*NOBODY, *([] if plain.returncode == 0 else READ_ANYWHERE), *command]


def assert_shows_a_switch_failing_and_recovering(out: str) -> None:
    """Scenes 1 and 2: a switch dies, its callers hear it, a bystander hears
    nothing, it comes back rebooted, its callers hear "service restored"."""
    down = re.search(r"\d+\.\d s: (\S+) is down: no SNMP reply within 500 ms", out)
    assert down, out
    switch = down[1]
    assert f'on {switch} hears auto-switch-{switch} "По вашему адресу авария на сети.' in out
    assert re.search(r"plays /tmp/announcer-demo-\w+/sounds/\S+", out), out
    assert re.search(r"\S+ on \S+-06 hears nothing: straight to the queue", out), out
    assert re.search(rf"\d s: {switch} is up; it rebooted \(sysUpTime \d+ d \d+ h -> \d s\)", out)
    assert f'on {switch} hears restored-auto-switch-{switch} "Связь восстановлена.' in out


def assert_shows_a_district_cut_and_a_staff_message(out: str) -> None:
    """Scenes 3 to 6: a district's aggregation switch is cut off, one district
    announcement; a staff message dropped for another district; the district
    back ("service restored"); the staff message withdrawn."""
    cut = re.search(r"\d s: agg-(\S+) is down; unreachable behind it: (\S+)-01, ", out)
    assert cut, out
    district = cut[1]
    assert f'hears auto-district-{district} "В районе ' in out
    staff = re.search(r"\d s: taken: done/note-\S+\.receipt\.json names (staff-\w+)", out)
    assert staff, out
    assert f'hears {staff[1]} "Ведутся плановые работы на линии.' in out
    assert f"s: agg-{district} is up, and the 6 switches behind it" in out
    assert f'hears restored-auto-district-{district} "Связь восстановлена.' in out
    withdrawn = out.partition("== 6. tech support withdraw their message")[2]
    assert re.search(r"\d s: \S.* hears nothing: straight to the queue", withdrawn), out


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


def assert_nothing_left(out: str) -> None:
    """No redis-server or daemon of the demo's still running, its folders
    gone, and the agents' port free again on every switch address."""
    redis = re.search(r"Redis: unix://(/tmp/announcer-redis-\w+)/redis\.sock", out)
    work = re.search(r"--config (/tmp/announcer-demo-\w+)/announcer\.toml", out)
    port = re.search(r"on UDP port (\d+) of their loopback addresses", out)
    assert redis, out
    assert work, out
    assert port, out
    for folder in (redis[1], work[1]):
        assert _processes_mentioning(folder) == []
        assert not Path(folder).exists()
    with (INVENTORY / "switches.csv").open(encoding="utf-8") as f:
        addresses = [row["address"] for row in csv.DictReader(f)]
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, int(port[1])))  # EADDRINUSE if an agent were left
