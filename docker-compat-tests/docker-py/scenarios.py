"""docker-py (the Python SDK, 5.0.x) scenarios for the compat runner.

Run as: python3 scenarios.py SCENARIO. The runner passes the target in the environment
(DOCKER_HOST, COMPAT_REGISTRY, COMPAT_TARGET, COMPAT_API_VERSION, COMPAT_IMAGES) and reads one
JSON document from the last line of stdout: {"failures": [...], "observations": {...}}.
Checks are soft (a failure is recorded, the scenario goes on) unless they raise.
"""
import io
import json
import os
import sys
import tarfile
import time
import traceback

import docker
from docker.errors import APIError, ContainerError, ImageNotFound, NotFound

REG = os.environ["COMPAT_REGISTRY"]
TARGET = os.environ["COMPAT_TARGET"]
IMAGES = json.loads(os.environ["COMPAT_IMAGES"])
API_VERSION = os.environ.get("COMPAT_API_VERSION") or "auto"
BB = REG + "/busybox:latest"

failures = []
observations = {}


def check(ok, message):
    if not ok:
        failures.append(message)
    return ok


def equal(actual, expected, what):
    return check(actual == expected, "%s: expected %r, got %r" % (what, expected, actual))


def observe(key, value):
    observations[key] = value


def shape(obj):
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return {k: names.get(type(v), "unknown") for k, v in sorted(obj.items())}


def client():
    return docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version=API_VERSION, timeout=60)


def api_error(fn):
    try:
        fn()
        return "no error"
    except APIError as e:
        return {"status_code": e.status_code, "explanation": e.explanation, "class": type(e).__name__}


def remove_quietly(c, name):
    try:
        c.containers.get(name).remove(force=True)
    except NotFound:
        pass


# ---------------------------------------------------------------------------------------------


def system():
    c = client()
    equal(c.ping(), True, "ping")
    v = c.version()
    equal(v.get("Os"), "linux", "version Os")
    check("ApiVersion" in v, "version has ApiVersion")
    info = c.info()
    equal(info.get("OSType"), "linux", "info OSType")
    observe("version.shape", shape(v))
    observe("api_version", "negotiated" if API_VERSION == "auto" else c.api.api_version)


def images():
    c = client()
    ref = REG + "/busybox-oci:latest"
    try:
        c.images.remove(ref, force=True)
    except ImageNotFound:
        pass
    img = c.images.pull(REG + "/busybox-oci", tag="latest")
    equal(img.id, IMAGES["busybox-oci"]["configDigest"], "pulled image id (OCI manifest)")
    # busybox-oci holds the very image busybox does (same config): other tags may be there too.
    check(ref in img.tags, "pulled image tags lack %s: %r" % (ref, img.tags))
    digest_ref = REG + "/busybox-oci@" + IMAGES["busybox-oci"]["manifestDigest"]
    check(digest_ref in img.attrs.get("RepoDigests", []), "RepoDigests lack %s: %r" % (digest_ref, img.attrs.get("RepoDigests")))
    observe("image.attrs", img.attrs)
    listed = c.images.list(name=REG + "/busybox-oci")
    equal([i.id for i in listed], [img.id], "images.list(name=...)")
    hist = img.history()
    check(len(hist) >= 1, "history has entries: %r" % (hist,))
    observe("history", hist)
    equal(img.tag(REG + "/compat-%s/py-oci" % TARGET, "v1"), True, "image.tag")
    again = c.images.get(REG + "/compat-%s/py-oci:v1" % TARGET)
    equal(again.id, img.id, "images.get of the new tag")
    c.images.remove(REG + "/compat-%s/py-oci:v1" % TARGET)
    err = api_error(lambda: c.images.get(REG + "/compat-%s/py-oci:v1" % TARGET))
    equal(err.get("status_code") if isinstance(err, dict) else err, 404, "images.get after remove")
    equal(err.get("class") if isinstance(err, dict) else err, "ImageNotFound", "images.get after remove raises ImageNotFound")


def run():
    c = client()
    out = c.containers.run(BB, ["sh", "-c", "echo out; echo err >&2"], remove=True, stdout=True, stderr=True, name="py-run")
    # run() returns the logs of both streams merged by time: which of two near-simultaneous lines
    # comes first is not defined (dockerd gives either order), so compare the lines as a set.
    equal(sorted(out.splitlines()), [b"err", b"out"], "containers.run output (stdout and stderr)")
    try:
        c.containers.run(BB, ["sh", "-c", "echo failing >&2; exit 3"], remove=True, name="py-run-fail")
        failures.append("containers.run of a failing command did not raise ContainerError")
    except ContainerError as e:
        equal(e.exit_status, 3, "ContainerError.exit_status")
        equal(e.stderr, b"failing\n", "ContainerError.stderr")
        observe("ContainerError", {"exit_status": e.exit_status, "stderr": e.stderr.decode()})
    time.sleep(0.5)
    left = c.containers.list(all=True, filters={"name": "py-run"})
    equal([x.name for x in left], [], "remove=True leaves nothing")


def lifecycle():
    c = client()
    remove_quietly(c, "py-main")
    ctr = c.containers.run(
        BB,
        ["sh", "-c", 'trap "exit 0" TERM; echo py-started; while true; do sleep 1; done'],
        detach=True,
        name="py-main",
        labels={"compat": "docker-py"},
        environment={"PYENV": "yes"},
        working_dir="/tmp",
    )
    ctr.reload()
    equal(ctr.status, "running", "status after run(detach=True)")
    equal(ctr.labels, {"compat": "docker-py"}, "labels")
    observe("attrs", ctr.attrs)
    listed = c.containers.list(filters={"label": "compat=docker-py"})
    equal([x.name for x in listed], ["py-main"], "containers.list(filters=label)")
    code, out = ctr.exec_run(["sh", "-c", "echo $PYENV $X; pwd; exit 2"], environment={"X": "y"})
    equal((code, out), (2, b"yes y\n/tmp\n"), "exec_run")
    code, (so, se) = ctr.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    equal((code, so, se), (0, b"o\n", b"e\n"), "exec_run(demux=True)")
    code, out = ctr.exec_run(["id", "-u"], user="1000")
    equal((code, out), (0, b"1000\n"), "exec_run(user=1000)")
    for _ in range(25):
        logs = ctr.logs()
        if logs:
            break
        time.sleep(0.2)
    equal(logs, b"py-started\n", "logs")
    equal(len(ctr.logs(timestamps=True).split(b" ", 1)[0]), 30, "logs(timestamps=True) prefix is RFC 3339 with nanoseconds")
    top = ctr.top()
    equal(top.get("Titles"), ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "top Titles")
    stats = ctr.stats(stream=False)
    for k in ("read", "cpu_stats", "memory_stats", "pids_stats"):
        check(k in stats, "stats lacks %s" % k)
    observe("stats.shape", shape(stats))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"via put_archive\n"
        info = tarfile.TarInfo("py.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    equal(ctr.put_archive("/tmp", buf.getvalue()), True, "put_archive")
    chunks, stat = ctr.get_archive("/tmp/py.txt")
    equal(stat.get("name"), "py.txt", "get_archive stat name")
    equal(stat.get("size"), 16, "get_archive stat size")
    observe("archive.stat", {k: v for k, v in stat.items() if k != "mtime"})
    raw = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        equal(t.extractfile("py.txt").read(), b"via put_archive\n", "get_archive content")
    diff = ctr.diff()
    check({"Path": "/tmp/py.txt", "Kind": 1} in (diff or []), "diff lacks /tmp/py.txt added: %r" % (diff,))
    ctr.pause()
    ctr.reload()
    equal(ctr.status, "paused", "status after pause")
    ctr.unpause()
    ctr.rename("py-main-2")
    ctr.reload()
    equal(ctr.name, "py-main-2", "name after rename")
    ctr.rename("py-main")
    ctr.stop(timeout=5)
    equal(ctr.wait(timeout=30), {"StatusCode": 0, "Error": None}, "wait after stop")
    ctr.reload()
    equal(ctr.status, "exited", "status after stop")
    ctr.remove()
    equal(api_error(lambda: c.containers.get("py-main")).get("status_code"), 404, "get after remove")


def attach_socket():
    c = client()
    remove_quietly(c, "py-attach")
    ctr = c.containers.create(BB, ["sh", "-c", "read l; echo got:$l"], stdin_open=True, name="py-attach")
    sock = ctr.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)
    ctr.start()
    raw.sendall(b"hello-py\n")
    raw.settimeout(15)
    data = b""
    try:
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            data += chunk
            if b"got:hello-py\n" in data:
                break
    except OSError as e:
        failures.append("attach socket read: %r" % (e,))
    equal(data, b"\x01\x00\x00\x00\x00\x00\x00\x0dgot:hello-py\n", "attach_socket: one stdout frame")
    result = ctr.wait(timeout=30)
    equal(result.get("StatusCode"), 0, "exit code")
    sock.close()
    ctr.remove(force=True)


def events():
    c = client()
    until = int(time.time()) + 1
    evs = list(c.events(since=until - 300, until=until, decode=True, filters={"type": "container", "container": "py-main"}))
    actions = [e.get("Action") for e in evs]
    for a in ("create", "start", "pause", "unpause", "rename", "kill", "die", "stop", "destroy"):
        check(a in actions, "events lack %r: %r" % (a, actions))
    rename = [e for e in evs if e.get("Action") == "rename"]
    if check(bool(rename), "no rename event"):
        equal(rename[0]["Actor"]["Attributes"].get("oldName"), "/py-main", "rename event oldName")
    observe("actions", actions)


def errors():
    c = client()
    errs = {
        "get_missing": api_error(lambda: c.containers.get("py-nosuch")),
        "image_missing": api_error(lambda: c.images.get(REG + "/nosuch:latest")),
        "create_missing_image": api_error(lambda: c.api.create_container(REG + "/nosuch:latest")),
        "pull_missing": api_error(lambda: c.images.pull(REG + "/nosuch", tag="latest")),
        "remove_missing_image": api_error(lambda: c.images.remove(REG + "/nosuch:latest")),
    }
    equal(errs["get_missing"], {"status_code": 404, "explanation": "No such container: py-nosuch", "class": "NotFound"}, "containers.get missing")
    # dockerd 20.10 says "no such image: X: No such image: X"; dockerd >= 23 "No such image: X".
    im = errs["image_missing"]
    check(
        isinstance(im, dict) and im["status_code"] == 404 and im["class"] == "ImageNotFound" and im["explanation"].endswith("No such image: %s/nosuch:latest" % REG),
        "images.get missing: %r" % (im,),
    )
    equal(errs["create_missing_image"], {"status_code": 404, "explanation": "No such image: %s/nosuch:latest" % REG, "class": "ImageNotFound"}, "create_container from a missing image")
    check(isinstance(errs["pull_missing"], dict) and errs["pull_missing"]["status_code"] == 404, "pull of a missing repository: %r" % (errs["pull_missing"],))
    equal(errs["remove_missing_image"], {"status_code": 404, "explanation": "No such image: %s/nosuch:latest" % REG, "class": "ImageNotFound"}, "images.remove missing")
    observe("errors", errs)


SCENARIOS = {
    "system": system,
    "images": images,
    "run": run,
    "lifecycle": lifecycle,
    "attach-socket": attach_socket,
    "events": events,
    "errors": errors,
}

if __name__ == "__main__":
    name = sys.argv[1]
    try:
        SCENARIOS[name]()
    except Exception:  # noqa: BLE001 - everything a scenario throws is a failure to report
        failures.append("raised: " + traceback.format_exc())
    print(json.dumps({"failures": failures, "observations": observations}, default=str))
