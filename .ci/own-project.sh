#!/usr/bin/env bash
# "Use kvmlab in your own project", exactly as README.md says it: the fenced blocks between
# <!-- own-project --> and <!-- /own-project --> are run in order in an empty folder outside
# the checkout (```sh blocks are run, ```LANG file=NAME blocks are written to NAME). Then the
# broken copy's JUnit file must fail exactly the checks that its one mistake breaks.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/kvmlab-own-project.XXXXXX)"
export KVMLAB_SRC="$src"
python3 - "$src/README.md" "$work" <<'PY'
import pathlib, re, sys
text = pathlib.Path(sys.argv[1]).read_text()
section = text.split("<!-- own-project", 1)[1].split("<!-- /own-project -->", 1)[0]
steps = []
for info, body in re.findall(r"```([^\n]*)\n(.*?)```", section, re.S):
    name = re.search(r"file=(\S+)", info)
    if name:
        target = pathlib.Path(sys.argv[2]) / name.group(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    elif info.strip() == "sh":
        steps.append(body)
(pathlib.Path(sys.argv[2]) / "steps.sh").write_text("PS4='+ [$SECONDS s] '\nset -euxo pipefail\n" + "\n".join(steps))
PY
cd "$work"
echo "== own project in $work: $(ls)"
start=$SECONDS
bash steps.sh
echo "== own project: README steps took $((SECONDS - start)) s"
python3 - <<'PY'
import xml.etree.ElementTree as ET
good = ET.parse("mylab.xml").getroot()
assert good.get("failures") == "0" and good.get("errors") == "0", ET.tostring(good, encoding="unicode")
suite = ET.parse("broken.xml").getroot()
failed = {f"{c.get('classname')}::{c.get('name')}": (c.find("failure") if c.find("failure") is not None else c.find("error"))
          for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None}
expected_checks = {"nfs-server::pool-clients-allowed", "hypervisor::netfs-pools-active", "hypervisor::netfs-volumes-on-export"}
checks = {k for k in failed if not k.startswith("bring-up::")}
steps = {k for k in failed if k.startswith("bring-up::")}
print("broken lab: failed checks:", sorted(checks), "failed bring-up steps:", sorted(steps))
assert checks == expected_checks, f"expected exactly {sorted(expected_checks)} to fail, got {sorted(checks)}"
assert steps == {"bring-up::kvm-a hypervisor clients", "bring-up::kvm-b hypervisor clients"}, steps
cases = [c for c in suite.iter("testcase") if c.get("classname") != "bring-up"]
passed = [c for c in cases if c.find("failure") is None and c.find("error") is None]
assert len(passed) == len(cases) - len(checks) >= 10, f"{len(passed)} of {len(cases)} checks passed on the broken lab"
for name, elem in failed.items():
    message = elem.get("message")
    assert "kvm-a" in message or "kvm-b" in message or "store-a" in message, f"{name}: message names no node: {message}"
    print(f"  {name}: {message}")
print(f"broken lab: {len(passed)} checks passed, exactly the expected {len(checks)} checks failed")
PY
cd /; rm -rf "$work"
